"""Cost per accepted sample: every call counted (rejected samples' and retries' included), the
interval resamples whole samples, and no accepted sample means no figure."""

from __future__ import annotations

import pytest

from evaluators.accepted_cost import SampleCost, per_accepted


def test_rejected_samples_and_overhead_are_paid_by_the_accepted_ones() -> None:
    samples = [
        SampleCost(True, 0.010, 1000),
        SampleCost(True, 0.030, 3000),  # a sample with retries
        SampleCost(False, 0.020, 2000),  # rejected: paid for all the same
    ]
    figure = per_accepted(samples, overhead_usd=0.004, overhead_tokens=400)
    assert (figure["accepted"], figure["samples"]) == (2, 3)
    usd, tokens = figure["usd"], figure["tokens"]
    assert isinstance(usd, dict) and isinstance(tokens, dict)
    assert usd["value"] == pytest.approx((0.010 + 0.030 + 0.020 + 0.004) / 2)
    assert tokens["value"] == pytest.approx(6400 / 2)
    assert usd["ci_low"] < usd["value"] < usd["ci_high"]
    # the cheapest possible resample: the 0.010 sample alone; the dearest: the rejected one
    # with a single accepted sample among three drawn
    assert usd["ci_low"] >= 0.010 + 0.004 / 3 - 1e-12
    assert usd["ci_high"] <= 0.030 + 2 * 0.020 + 0.004


def test_seeded_and_identical_costs_give_a_point_interval() -> None:
    same = [SampleCost(True, 0.002, 100)] * 5
    figure = per_accepted(same)
    assert figure["usd"] == {"value": 0.002, "ci_low": 0.002, "ci_high": 0.002}
    varied = [SampleCost(i % 3 != 0, 0.001 * i, 10 * i) for i in range(1, 30)]
    assert per_accepted(varied, seed=3) == per_accepted(varied, seed=3)
    assert per_accepted(varied, seed=3) != per_accepted(varied, seed=4)


def test_no_accepted_sample_or_no_known_cost() -> None:
    nothing = per_accepted([SampleCost(False, 0.01, 100), SampleCost(False, 0.02, 200)])
    assert nothing["usd"] is None and nothing["tokens"] is None and nothing["accepted"] == 0
    offline = per_accepted([SampleCost(True, None, 100), SampleCost(False, None, 50)])
    assert offline["usd"] is None  # unknown is not free
    tokens = offline["tokens"]
    assert isinstance(tokens, dict) and tokens["value"] == 150.0  # tokens are always known
    assert tokens["ci_low"] is not None and tokens["ci_low"] >= 100
