"""Where a generation run's model time goes: per stage, calls, prompt and output tokens, and,
for in-process llama.cpp calls traced since the prefix cache, the prompt tokens actually
evaluated (prefill) and the seconds spent in prefill and in decoding.

Run from the repository root (a running run is read from its snapshot)::

    python benchmarks/profile_demo.py --db runs/icm.duckdb [--run RUN_ID]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def profile(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Totals per stage (``explainer:R1`` and ``explainer:R2`` count as ``explainer``)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        stage = str(row["stage"] or row["role"] or "?").split(":")[0]
        totals = out[stage]
        totals["calls"] += 1
        totals["prompt_tokens"] += row["input_tokens"] or 0
        totals["output_tokens"] += row["output_tokens"] or 0
        totals["latency_s"] += (row["latency_ms"] or 0) / 1000.0
        perf = json.loads(row["params_json"] or "{}").get("llama_perf")
        if perf:
            totals["traced_calls"] += 1
            for key in ("prefill_tokens", "prefill_s", "decode_tokens", "decode_s"):
                totals[key] += perf[key]
    return {stage: dict(values) for stage, values in out.items()}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from data.store import queries
    from data.store.reading import open_for_reading
    from data.store.store import StoreError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path("runs/icm.duckdb"))
    parser.add_argument("--run", help="run id (default: the latest generate run)")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        parser.error(f"{args.db}: no such store")
    try:
        store, _ = open_for_reading(args.db)
    except StoreError as exc:  # locked without a snapshot, older or newer schema: one line
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        run_id = args.run or queries.latest_run_id(store, "generate")
        if run_id is None:
            parser.error(f"{args.db}: no generate run")
        rows = queries.call_profile_rows(store, run_id)
    finally:
        store.close()
    stages = profile(rows)
    head = f"{'stage':<20}{'calls':>6}{'prompt':>8}{'output':>8}{'latency s':>11}"
    print(f"{args.db} run {run_id}: {len(rows)} calls")
    print(head + f"{'prefill tok':>12}{'prefill s':>10}{'decode s':>10}")
    for stage, t in sorted(stages.items(), key=lambda kv: -kv[1]["latency_s"]):
        traced = t.get("traced_calls", 0)
        extra = (
            f"{t['prefill_tokens']:>12.0f}{t['prefill_s']:>10.1f}{t['decode_s']:>10.1f}"
            if traced
            else f"{'-':>12}{'-':>10}{'-':>10}"
        )
        print(
            f"{stage:<20}{t['calls']:>6.0f}{t['prompt_tokens']:>8.0f}{t['output_tokens']:>8.0f}"
            f"{t['latency_s']:>11.1f}" + extra
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
