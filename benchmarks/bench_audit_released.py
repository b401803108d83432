"""The audit's findings on released ICM-Instruct records it was never tuned on.

The audit's checks (``icm audit``, ``evaluators.audit``) were written while reading the 420
shipped dev records (``instruct_dev.jsonl``). This draws ``--n`` other images at random (fixed
seed) from the authors' training text (``prepare_jsons_for_training/reason/1``, ``qa``, ``mc``
of a checkout of zhaoyuzhi/ICM-Assistant; :mod:`evaluators.release_records`), writes them as
audit records, audits them, and prints the findings per kind. With ``--read K`` it also writes
K findings drawn at random (fixed seed) with their record's text to a JSON file, for a person to
read and mark real or false (the precision this cannot compute by itself).

Run from the repository root::

    python benchmarks/bench_audit_released.py --release ../icm-release --n 2000 --read 50 \\
        --out /tmp/audit2000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_FILE = ROOT.parent / "shared" / "datasets" / "icm_assistant" / "instruct_dev.jsonl"


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from data.policy import load_policy
    from evaluators.audit import KINDS, audit_file
    from evaluators.release_records import release_images, release_records

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, required=True, help="checkout of the release")
    parser.add_argument("--dev", type=Path, default=DEV_FILE, help="records to leave out")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--read", type=int, default=0, help="findings to draw for reading")
    parser.add_argument("--policy", default="icm_sexy")
    parser.add_argument("--out", type=Path, default=Path("runs") / "audit_released")
    args = parser.parse_args(argv)

    policy = load_policy(args.policy)
    dev = {json.loads(line)["image"] for line in args.dev.read_text().splitlines() if line}
    pool = [name for name in release_images(args.release) if name not in dev]
    chosen = sorted(random.Random(args.seed).sample(pool, min(args.n, len(pool))))
    args.out.mkdir(parents=True, exist_ok=True)
    records = args.out / "records.jsonl"
    with records.open("w", encoding="utf-8") as handle:
        for record in release_records(args.release, chosen, policy):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    report = audit_file(records, policy)
    counts = report.counts()
    affected = report.records_affected()
    with_findings = len({(f.line, f.record) for f in report.findings})
    print(
        f"{report.records} released records outside the dev set ({len(pool)} in the pool, "
        f"seed {args.seed}); {with_findings} with findings, {len(report.findings)} findings"
    )
    for kind in KINDS:
        if counts[kind]:
            print(f"  {kind}: {counts[kind]} findings in {affected[kind]} records")
    summary = {"records": report.records, "pool": len(pool), "seed": args.seed,
               "records_with_findings": with_findings, "counts": counts,
               "records_affected": affected}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.read:
        texts = {r["image"]: r for r in map(json.loads, records.read_text().splitlines())}
        drawn = random.Random(args.seed).sample(report.findings,
                                                min(args.read, len(report.findings)))  # fmt: skip
        to_read = [
            {"kind": f.kind, "record": f.record, "question": f.question, "answer": f.answer,
             "why": f.why, "label": texts[f.record]["label"],
             "explanation": texts[f.record]["explanation"]}
            for f in drawn
        ]  # fmt: skip
        (args.out / "to_read.json").write_text(json.dumps(to_read, indent=1, ensure_ascii=False))
        print(f"{len(to_read)} findings to read: {args.out / 'to_read.json'} "
              f"({dict(Counter(f['kind'] for f in to_read))})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
