"""Compare generation runs: how each role->model binding fares on acceptance, retries, critic
failures, judged quality, tokens, cost and latency.

This is how researchers choose a generator combination, so every number is defined here once
and the table, the JSON and the plots all read the same dicts:

- ``acceptance_rate``: accepted / decided samples (accepted + rejected + failed); pending samples
  are counted but not in the rate, so an interrupted run is not penalised for unfinished work.
  ``refused`` counts the failed samples whose model declined (after its refusal retries and
  fallback; see ``data/store/outcomes.py``), so a model that refuses this content shows as such.
- ``retries_per_sample``: over samples that ran any stage, the mean of the sum, over generating
  stages, of the attempts beyond the first (an explainer redone twice and the Q-A writer redone
  after it is 3). The critic is not a generating stage: it re-checks every round, so counting it
  would count each retry twice.
- ``critic_failures``: failed checks (deterministic and LLM) by check name, most frequent first.
- ``scores``: judge scores per criterion (0-100) over the run's judged items, with a seeded
  bootstrap 95 % interval. An item is (sample, rule variant); its repeats (and position-swapped
  repeats) are averaged first, so repeats narrow nothing they should not. Only one judge spec is
  read at a time (scores from different judges are not on one scale): the one asked for, else
  the one that judged most of these runs' items. Judgments that are not ``scored`` are counted
  as ``judge_unscored``, never as low scores.
- ``rule_contrast``: of the accepted samples whose explanations give different verdicts under
  different rule variants, how many argue each verdict and name the audience difference
  (:mod:`evaluators.rule_contrast`); ``rate`` is None when no sample's verdict flips.
- ``per_accepted``: what one accepted record cost, tokens and USD, every call counted (retries
  and the samples that ended rejected or failed included), with a seeded bootstrap 95 %
  interval over samples (``evaluators/accepted_cost.py``); ``cost_per_accepted_usd`` and
  ``tokens_per_accepted`` are its point values.
- ``cached_input_tokens`` / ``cache_write_tokens``: of ``input_tokens``, those the provider's
  prompt cache read (priced at the cached rate) and wrote.
- ``cost_usd``: None where no call reported a cost (unknown is not free); ``mean_latency_ms``
  is over calls that reached a model (cache hits excluded: they would flatter a run that
  happened to be re-run).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from data.provenance import compact_roles
from data.store import Store, from_json, queries
from evaluators.accepted_cost import SampleCost, per_accepted
from evaluators.metrics import bootstrap_ci
from evaluators.rule_contrast import run_contrast


class RunLookupError(LookupError):
    """A run reference matches no run, or several."""


@dataclass
class Comparison:
    """The compared runs (in the order asked), the judge read, and per-item scores for plots."""

    runs: list[dict[str, Any]]
    judge_spec: str | None
    judge_specs: list[str]
    criteria: list[str]
    item_scores: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """run_id -> criterion -> one score per judged item (repeats averaged)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge_spec": self.judge_spec,
            "judge_specs": self.judge_specs,
            "criteria": self.criteria,
            "runs": self.runs,
        }


def resolve_runs(store: Store, refs: list[str]) -> list[dict[str, Any]]:
    """Runs by id, name, or a prefix of the id; each reference must name exactly one run."""
    found: list[dict[str, Any]] = []
    for ref in refs:
        exact = queries.run_row(store, ref)
        rows = [exact] if exact else queries.runs_named(store, ref)
        rows = rows or queries.runs_with_id_prefix(store, ref)
        if not rows:
            known = ", ".join(
                f"{r['name']} ({r['run_id']})" for r in queries.run_listing(store, limit=20)
            )
            raise RunLookupError(f"no run {ref!r} in {store.path} (runs: {known or 'none'})")
        if len(rows) > 1:
            ids = ", ".join(r["run_id"] for r in rows)
            raise RunLookupError(f"{ref!r} names several runs ({ids}): pass a run id")
        if rows[0]["run_id"] not in {r["run_id"] for r in found}:
            found.append(rows[0])
    return found


def compare_runs(
    store: Store, refs: list[str], *, judge: str | None = None, seed: int = 0
) -> Comparison:
    """Gather every compared number for the runs named by ``refs``."""
    runs = resolve_runs(store, refs)
    ids = [r["run_id"] for r in runs]
    judgments = _judgments(store, ids)
    specs = Counter(j["judge_spec"] for j in judgments)
    judge_specs = sorted(specs)
    if judge is not None and judge not in specs:
        raise RunLookupError(
            f"no judgments by {judge!r} for these runs (judges: {', '.join(judge_specs) or 'none'})"
        )
    chosen = judge or (specs.most_common(1)[0][0] if specs else None)
    picked = [j for j in judgments if j["judge_spec"] == chosen]
    item_scores = _item_scores(picked)
    criteria = sorted({c for per_run in item_scores.values() for c in per_run})
    rows = []
    for run in runs:
        rid = run["run_id"]
        row = _run_row(store, run, seed=seed)
        row["rule_contrast"] = run_contrast(store, rid).to_dict()
        scores = item_scores.get(rid, {})
        row["scores"] = {
            c: _summary(scores.get(c, []), seed=seed) for c in criteria if scores.get(c)
        }
        row["judged_items"] = max((len(v) for v in scores.values()), default=0)
        row["judge_unscored"] = sum(
            1 for j in picked if j["run"] == rid and j["status"] != "scored"
        )
        rows.append(row)
    return Comparison(rows, chosen, judge_specs, criteria, item_scores)


def _summary(values: list[float], *, seed: int) -> dict[str, Any]:
    interval = bootstrap_ci(values, seed=seed)
    return {
        "mean": sum(values) / len(values),
        "ci_low": interval[0] if interval else None,
        "ci_high": interval[1] if interval else None,
        "n": len(values),
    }


def _per_accepted(store: Store, run_id: str, seed: int) -> dict[str, Any]:
    rows = queries.sample_call_costs(store, run_id)
    samples = [
        SampleCost(r["status"] == "accepted", r["cost_usd"], int(r["tokens"]))
        for r in rows
        if r["sample_id"] is not None
    ]
    extra = [r for r in rows if r["sample_id"] is None]
    return per_accepted(
        samples,
        overhead_usd=extra[0]["cost_usd"] if extra else None,
        overhead_tokens=int(extra[0]["tokens"]) if extra else 0,
        seed=seed,
    )


def _run_row(store: Store, run: dict[str, Any], *, seed: int = 0) -> dict[str, Any]:
    rid = run["run_id"]
    counts = queries.sample_totals(store, rid)
    decided = counts["accepted"] + counts["rejected"] + counts["failed"]
    retries = queries.retries_per_sample(store, rid)
    failures = queries.failed_check_counts(store, rid)
    calls = queries.call_totals(store, rid)
    tokens_in, tokens_out = int(calls["input_tokens"]), int(calls["output_tokens"])
    cost = None if calls["cost_usd"] is None else float(calls["cost_usd"])
    latency = calls["mean_latency_ms"]
    accepted_cost = _per_accepted(store, rid, seed)
    bindings = from_json(run.get("role_bindings_json"))
    return {
        "run_id": rid,
        "name": run["name"],
        "kind": run["kind"],
        "status": run["status"],
        "policy": run.get("policy_name"),
        "rules": run.get("rule_variants"),
        "roles": bindings,
        "roles_compact": compact_roles(bindings),
        **counts,
        "acceptance_rate": counts["accepted"] / decided if decided else None,
        "retries_total": sum(retries),
        "retries_per_sample": sum(retries) / len(retries) if retries else None,
        "critic_failures": failures,
        "calls": int(calls["calls"]),
        "cache_hits": int(calls["cache_hits"]),
        "earlier_attempt_calls": int(calls["earlier_calls"]),
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "tokens": tokens_in + tokens_out,
        "cached_input_tokens": int(calls["cached_input_tokens"]),
        "cache_write_tokens": int(calls["cache_write_tokens"]),
        "cost_usd": cost,
        "cost_per_accepted_usd": (accepted_cost["usd"] or {}).get("value"),
        "tokens_per_accepted": (accepted_cost["tokens"] or {}).get("value"),
        "per_accepted": accepted_cost,
        "mean_latency_ms": None if latency is None else float(latency),
    }  # fmt: skip


def _judgments(store: Store, run_ids: list[str]) -> list[dict[str, Any]]:
    return queries.judgments_of_runs(store, run_ids)


def _item_scores(judgments: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """run -> criterion -> one mean score per item (sample, rule variant)."""
    per_item: dict[tuple[str, str, str | None], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for j in judgments:
        if j["status"] != "scored":
            continue
        scores = from_json(j["scores_json"])
        if not isinstance(scores, dict):
            continue
        key = (j["run"], j["sample_id"], j["rule_variant"])
        for criterion, value in scores.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                per_item[key][criterion].append(float(value))
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (run, _, _), criteria in sorted(per_item.items(), key=lambda kv: str(kv[0])):
        for criterion, values in criteria.items():
            out[run][criterion].append(sum(values) / len(values))
    return {run: dict(c) for run, c in out.items()}
