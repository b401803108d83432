"""List every text of a run's accepted records that the detector evidence does not ground.

A classifier label named below its threshold, a colour image called black and white, a person
in a text card, writing where OCR read none, or a claim the detectors contradict
(``agents.perception.grounding_audit``). Exit status 1 when anything is found, so a demo run
can be gated on it.

Run from the repository root::

    python benchmarks/audit_grounding.py --db runs/icm.duckdb            # the latest run
    python benchmarks/audit_grounding.py --db runs/icm.duckdb --run RUN_ID --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from agents.perception.grounding_audit import audit, records_from_store
    from data.policy import load_policy
    from data.store import queries
    from data.store.reading import open_for_reading
    from data.store.store import StoreError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=Path("runs/icm.duckdb"))
    parser.add_argument("--run", help="run id (default: the latest generate run)")
    parser.add_argument("--json", type=Path, help="also write the findings as JSON here")
    args = parser.parse_args(argv)
    if not args.db.is_file():
        parser.error(f"{args.db}: no such store")
    try:
        store, as_of = open_for_reading(args.db)  # a running run: its latest snapshot
    except StoreError as exc:  # locked without a snapshot, older or newer schema: one line
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        run_id = args.run or queries.latest_run_id(store, "generate")
        if run_id is None:
            parser.error(f"{args.db}: no generate run")
        records = records_from_store(store, run_id)
    finally:
        store.close()
    if as_of is not None:
        print(f"(read from the snapshot published at {as_of:%H:%M:%S}: the run is still going)")
    policies = {name: load_policy(name) for name in {r.policy for r in records}}
    findings = audit(records, policies)
    print(f"{args.db} run {run_id}: {len(records)} accepted samples, {len(findings)} findings")
    for f in findings:
        print(f"  {f.image} {f.where}: {f.message}")
    if args.json:
        rows = [asdict(f) for f in findings]
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
