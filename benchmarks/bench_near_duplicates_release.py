"""Near-duplicate pairs in the full ICM-Instruct release (the authors' repository,
``data/ICM-Instruct_data_generation_pipeline/prepare_jsons_for_training``): how many of its
explanations, Q-A items and multiple-choice items are near-copies of another image's, with
``evaluators.near_duplicates`` (MinHash/LSH, exact Jaccard of word 3-gram shingles).

The release holds, per image, five explanations (``reason/1`` .. ``reason/5``, files named after
the image), one Q-A table (``qa/``) and one multiple-choice table (``mc/``). A "sample" here is
an image: its own five explanations are never paired with each other (they are five draws for
one image by design); a pair is two texts of two different images.

Run from the repository root::

    python benchmarks/bench_near_duplicates_release.py                       # all of it
    python benchmarks/bench_near_duplicates_release.py --reasons 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators.near_duplicates import DEFAULT_THRESHOLD, Text, find_pairs  # noqa: E402

DEFAULT_RELEASE = Path(
    "/work/icm-release/data/ICM-Instruct_data_generation_pipeline/prepare_jsons_for_training"
)


def _table_rows(path: Path) -> list[list[str]]:
    """The body rows of a markdown table, cells stripped (the header and rule skipped)."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if (
            len(cells) < 2
            or set(cells[0]) <= {"-", " "}
            or cells[0] in ("Type of Question", "Question")
        ):
            continue
        rows.append(cells)
    return rows


def read_release(root: Path, reasons: list[str]) -> list[Text]:
    texts: list[Text] = []
    for folder in reasons:
        for path in sorted((root / "reason" / folder).glob("*.txt")):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            texts.append(Text(path.name.removesuffix(".txt"), "explanation", folder, text))
    for path in sorted((root / "qa").glob("*.txt")):
        for n, cells in enumerate(_table_rows(path)):
            texts.append(Text(path.name.removesuffix(".txt"), "qa", str(n), " ".join(cells[1:])))
    for path in sorted((root / "mc").glob("*.txt")):
        for n, cells in enumerate(_table_rows(path)):
            texts.append(Text(path.name.removesuffix(".txt"), "mc", str(n), " ".join(cells)))
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, default=DEFAULT_RELEASE)
    parser.add_argument("--reasons", default="1,2,3,4,5", help="reason folders to read")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    if not (args.release / "reason").is_dir():
        print(f"error: no release at {args.release} (reason/ missing)", file=sys.stderr)
        return 1
    started = time.perf_counter()
    texts = read_release(args.release, args.reasons.split(","))
    read_s = time.perf_counter() - started
    report = find_pairs(texts, threshold=args.threshold, examples=5)
    total_s = time.perf_counter() - started
    images = len({t.sample_id for t in texts})
    figures = {"release": str(args.release), "images": images, "reason_folders": args.reasons,
               "read_s": round(read_s, 1), "total_s": round(total_s, 1),
               **report.to_dict(examples=3)}  # fmt: skip
    for kind in report.texts:
        print(f"{kind}: {report.texts[kind]} texts, {report.pair_counts[kind]} near-duplicate "
              f"pairs ({report.exact_pair_counts[kind]} identical), "
              f"{report.samples_involved[kind]} of {images} images involved")  # fmt: skip
    print(f"threshold {args.threshold}, {total_s:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
