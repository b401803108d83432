"""How often the garbage checks (``evaluators.text_checks``) reject the released ICM-Instruct
records: their false-rejection rate on text that is mostly good.

Each record's explanation is read by ``no_looping_text``, ``no_json_fragments`` and
``states_one_label``, its Q-A and multiple choice by ``qa_well_formed``, and its explanation
by ``attributes_mentioned`` against its category (the released data has no separate
description; a miss there measures the policy's synonym lists, not a defect). Key elements are
not in the released data, so ``key_elements_in_description`` is not measured here.

Run from the repository root::

    python benchmarks/bench_checks_released.py                  # ../shared/... by default
    python benchmarks/bench_checks_released.py --file other.jsonl --policy icm_sexy --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the paper's release: ICM_RELEASE_DATA names its folder (as for the tests), else the shared copy
RELEASE_DIR = Path(
    os.environ.get("ICM_RELEASE_DATA", "").strip()
    or ROOT.parent / "shared" / "datasets" / "icm_assistant"
)
DEFAULT_FILE = RELEASE_DIR / "instruct_dev.jsonl"


@dataclass
class Measurement:
    """Rejections per check over one file; ``per_check`` rows: records, rejected, rate."""

    file: str
    policy: str
    records: int = 0
    bad_lines: list[str] = field(default_factory=list)
    per_check: dict[str, dict[str, float]] = field(default_factory=dict)
    rejected_by_any_text_check: int = 0
    """Records failing any check but ``attributes_mentioned`` (which reads the explanation as
    if it were a description, see the module docstring)."""
    rejected_by_any_check: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)


def measure(path: Path, policy_name: str, examples: int) -> Measurement:
    sys.path.insert(0, str(ROOT))
    from data.policy import load_policy
    from evaluators.audit import BadLine, read_records
    from evaluators.text_checks import released_record_checks

    policy = load_policy(policy_name)
    out = Measurement(file=str(path), policy=policy_name)
    rejected: Counter[str] = Counter()
    applied: Counter[str] = Counter()
    for number, item in read_records(path):
        if isinstance(item, BadLine):
            out.bad_lines.append(f"{path}:{item.line}: {item.message}")
            continue
        out.records += 1
        checks = released_record_checks(
            policy,
            category=item.category,
            explanation=item.explanation,
            qa=[(q.type, q.question, q.answer) for q in item.qa],
            mc=[(m.question, m.choices, m.answer) for m in item.mc],
        )
        failed = [c for c in checks if not c.passed]
        applied.update(c.name for c in checks)
        for check in failed:
            rejected[check.name] += 1
            bucket = out.examples.setdefault(check.name, []) if examples > 0 else None
            if bucket is not None and len(bucket) < examples:
                bucket.append(f"line {number} ({item.image}): {check.message[:300]}")
        out.rejected_by_any_check += bool(failed)
        out.rejected_by_any_text_check += any(c.name != "attributes_mentioned" for c in failed)
    out.per_check = {
        name: {
            "records": applied[name],
            "rejected": rejected[name],
            "rate": round(rejected[name] / applied[name], 4) if applied[name] else 0.0,
        }
        for name in sorted(applied)
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE,
                        help="ICM-Instruct JSONL (default: %(default)s)")  # fmt: skip
    parser.add_argument("--policy", default="icm_sexy", help="policy name or path")
    parser.add_argument("--examples", type=int, default=3, help="rejections shown per check")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        parser.error(f"{args.file}: no such file (pass --file)")
    result = measure(args.file, args.policy, args.examples)
    n = result.records
    print(f"{result.file}: {n} records, policy {result.policy}")
    for line in result.bad_lines:
        print(f"  unreadable: {line}")
    print(f"  {'check':<30} {'rejected':>9} {'rate':>7}")
    for name, row in result.per_check.items():
        print(f"  {name:<30} {row['rejected']:>5}/{row['records']:<3} {row['rate']:>7.1%}")
    text, every = result.rejected_by_any_text_check, result.rejected_by_any_check
    print(f"  any check but attributes_mentioned: {text}/{n} = {text / max(n, 1):.1%}")
    print(f"  any check:                          {every}/{n} = {every / max(n, 1):.1%}")
    for name, lines in result.examples.items():
        print(f"\n{name}:")
        for line in lines:
            print(f"  {line}")
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
