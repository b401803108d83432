"""How often the record checks (``evaluators.record_checks``) reject the released ICM-Instruct
records, beside today's text checks: the acceptance rate must not drop.

Each released record is read as a record of ours: its explanation is the description and the
explanation at once (the release has no separate description), its Q-A and multiple choice
are the Q-A set, its label the verdict. The record checks that apply: Q-A that contradict the
verdict or the record, questions about the question set, What questions filed as How, a
sentence written twice, pipeline talk. ``argument_rests_on_rule`` and the grounding check need
a rule variant and detector evidence the release does not have.

Run from the repository root::

    python benchmarks/bench_record_checks_released.py            # ../shared/... by default
    python benchmarks/bench_record_checks_released.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT.parent / "shared" / "datasets" / "icm_assistant" / "instruct_dev.jsonl"


def _texts(item: Any) -> list[str]:
    """The record's texts the pipeline reads for pipeline talk: the explanation and every
    question, answer and option."""
    texts = [item.explanation]
    texts += [text for q in item.qa for text in (q.question, q.answer)]
    texts += [text for m in item.mc for text in (m.question, *m.choices, m.answer)]
    return [str(text) for text in texts]


def measure(path: Path, policy_name: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from data.policy import load_policy
    from evaluators import record_checks as rc
    from evaluators.audit import BadLine, read_records
    from evaluators.text_checks import released_qa, released_record_checks

    policy = load_policy(policy_name)
    records = 0
    today_rejected = 0
    both_rejected = 0
    per_check: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for number, item in read_records(path):
        if isinstance(item, BadLine):
            continue
        records += 1
        today = [
            c
            for c in released_record_checks(
                policy,
                category=item.category,
                explanation=item.explanation,
                qa=[(q.type, q.question, q.answer) for q in item.qa],
                mc=[(m.question, m.choices, m.answer) for m in item.mc],
            )
            if not c.passed and c.name != "attributes_mentioned"
        ]
        qa = released_qa(
            [(q.type, q.question, q.answer) for q in item.qa],
            [(m.question, m.choices, m.answer) for m in item.mc],
        )
        found = {
            "qa_contradicts_verdict": rc.qa_verdict_problems(qa, item.label, policy),
            "mc_contradicts_record": rc.mc_record_problems(qa, item.explanation),
            "question_about_questions": rc.question_set_problems(qa),
            "how_item_asks_what": rc.kind_word_problems(qa),
            "yes_no_denies_description": rc.restated_description_problems(qa, item.explanation),
            "number_not_in_record": rc.unsupported_number_problems(qa, item.explanation),
            "repeated_sentence": [s] if (s := rc.repeated_sentence(item.explanation)) else [],
            "pipeline_talk": [t for text in _texts(item) if (t := rc.pipeline_talk(text))],
        }
        for name, problems in found.items():
            if problems:
                per_check[name] += 1
                bucket = examples.setdefault(name, [])
                if len(bucket) < 3:
                    bucket.append(f"line {number} ({item.image}): {problems[0][:240]}")
        new = any(found.values())
        today_rejected += bool(today)
        both_rejected += bool(today) or new
    return {
        "file": str(path),
        "records": records,
        "accepted_today": records - today_rejected,
        "accepted_with_record_checks": records - both_rejected,
        "rejected_by_record_check": dict(per_check),
        "examples": examples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--policy", default="icm_sexy")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        parser.error(f"{args.file}: no such file (pass --file)")
    out = measure(args.file, args.policy)
    n = out["records"]
    print(f"{out['file']}: {n} records")
    print(f"  accepted by today's text checks:          {out['accepted_today']}/{n}")
    print(f"  accepted with the record checks as well:  {out['accepted_with_record_checks']}/{n}")
    for name, count in sorted(out["rejected_by_record_check"].items()):
        print(f"  {name}: {count}")
        for line in out["examples"].get(name, []):
            print(f"    {line}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
