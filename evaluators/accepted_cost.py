"""What one accepted record costs: tokens and money per accepted sample, with an interval.

Every call of the run counts: retries, re-asks, critic rounds and the samples that ended
rejected or failed, since an accepted record is only had by paying for those too. The figure
is a ratio, sum over samples of what each cost divided by the samples accepted, so its bootstrap
resamples whole samples (each with its cost and whether it was accepted) and recomputes the
ratio; calls that belong to no sample are a fixed overhead added to every resample. Seeded, so
a report is reproducible; a resample with no accepted sample is skipped (its ratio is
undefined), and with none accepted at all there is no figure (None, never infinity or 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SampleCost:
    """One sample's calls summed: money (None where no call reported a cost), tokens in + out."""

    accepted: bool
    cost_usd: float | None
    tokens: int


def per_accepted(
    samples: Sequence[SampleCost],
    *,
    overhead_usd: float | None = None,
    overhead_tokens: int = 0,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float | None] | int | None]:
    """``{"usd": {value, ci_low, ci_high} | None, "tokens": {...} | None, "accepted": n,
    "samples": n}``; ``usd`` is None when no call of the run reported a cost (unknown is not
    free) and both are None when no sample was accepted."""
    accepted = np.array([s.accepted for s in samples], dtype=float)
    tokens = np.array([s.tokens for s in samples], dtype=float)
    known = [s.cost_usd for s in samples if s.cost_usd is not None]
    money_known = bool(known) or overhead_usd is not None
    usd = np.array([s.cost_usd or 0.0 for s in samples], dtype=float)
    out: dict[str, dict[str, float | None] | int | None] = {
        "accepted": int(accepted.sum()),
        "samples": len(samples),
        "usd": None,
        "tokens": None,
    }
    if not accepted.sum():
        return out
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(samples), size=(resamples, len(samples)))
    wins = accepted[picks].sum(axis=1)
    usable = wins > 0
    out["tokens"] = _ratio(
        tokens, float(overhead_tokens), accepted, picks, wins, usable, confidence
    )
    if money_known:
        out["usd"] = _ratio(usd, overhead_usd or 0.0, accepted, picks, wins, usable, confidence)
    return out


def _ratio(
    values: np.ndarray,
    overhead: float,
    accepted: np.ndarray,
    picks: np.ndarray,
    wins: np.ndarray,
    usable: np.ndarray,
    confidence: float,
) -> dict[str, float | None]:
    value = (values.sum() + overhead) / accepted.sum()
    ratios = (values[picks].sum(axis=1)[usable] + overhead) / wins[usable]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail]) if ratios.size else (None, None)
    return {
        "value": float(value),
        "ci_low": None if low is None else float(low),
        "ci_high": None if high is None else float(high),
    }
