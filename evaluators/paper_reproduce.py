"""The paper's tables, recomputed from the outputs its authors released.

Given a checkout of zhaoyuzhi/ICM-Assistant, :func:`reproduce` reads every released output it
knows under ``eval_scripts/``:

- ``eval_icm_val/<model>.json`` and ``eval_icm_test/<model>.json`` (:mod:`evaluators.paper_import`);
- ``eval_mqa/eval_mc_data/<model>.txt`` against ``mc_gt.txt`` and ``eval_qa_data/<model>.txt``
  against ``openqa_gt.txt``;
- ``eval_meq/<model>/``, GPT-4o's judgment files (:mod:`evaluators.paper_meq`);

and returns one row per figure: the figure the paper publishes, what the authors' script's
formula gives on the released file, and ours (each image counted once; multiple choice and open
questions apart; unreadable judgments excluded). The figures whose outputs were never released
(ICM-Val under R2, ICM-Test AIGC and Pornography, the zero-shot baselines) are rows too, named,
with nothing computed.

Published figures are those of the paper (AAAI 2025) for ICM-LLaVA-v1.5-7B, the one model whose
outputs the release holds (``llava-v1.5-7b-after-baseline``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data.policy_models import Policy
from evaluators.paper_import import (
    PAPER_THRESHOLD,
    ImportedRow,
    eval_json_rows,
    mqa_rows,
    paper_mqa,
    paper_test_accuracy,
    paper_val_accuracy,
)
from evaluators.paper_meq import MEQFileError, our_meq, read_judgments, script_meq

#: the released model's file stem, and the paper's name for it
RELEASED_MODEL = "llava-v1.5-7b-after-baseline"
RELEASED_MODEL_NAME = "ICM-LLaVA-v1.5-7B"
#: the paper's figures for the released model, by row key
PUBLISHED: dict[str, float] = {
    "icm_val_r1": 0.987,
    "icm_test_ugc": 0.958,
    "mqa": 0.922,
    "meq": 0.844,
}
#: figures the paper publishes whose model outputs were never released:
#: (key, figure, model, published, why). Tables 2-4 of the paper (AAAI 2025).
_NO_R2 = "no R2 outputs (nor R2 labels) were released"
_NO_BASE = "no outputs of the zero-shot baseline were released"
_ZERO_SHOT = "LLaVA-v1.5 0-shot"
UNRELEASED: tuple[tuple[str, str, str, float | None, str], ...] = (
    ("icm_val_r2", "ICM-Val R2", "ICM-LLaVA-v1.5-R2", 0.971, _NO_R2),
    ("icm_test_aigc", "ICM-Test AIGC", RELEASED_MODEL_NAME, 0.970,
     "only the UGC part's outputs were released"),
    ("icm_test_pornography", "ICM-Test Pornography", RELEASED_MODEL_NAME,
     0.983, "only the UGC part's outputs were released"),
    ("zero_shot_val_r1", "ICM-Val R1", _ZERO_SHOT, 0.794, _NO_BASE),
    ("zero_shot_val_r2", "ICM-Val R2", _ZERO_SHOT, 0.680, _NO_BASE),
    ("zero_shot_test_ugc", "ICM-Test UGC", _ZERO_SHOT, 0.896,
     _NO_BASE),
    ("zero_shot_test_aigc", "ICM-Test AIGC", _ZERO_SHOT, 0.940,
     _NO_BASE),
    ("zero_shot_test_pornography", "ICM-Test Pornography", _ZERO_SHOT, 0.923, _NO_BASE),
    ("zero_shot_meq", "MEQ", _ZERO_SHOT, 0.696, _NO_BASE),
    ("zero_shot_mqa", "MQA total", _ZERO_SHOT, 0.801, _NO_BASE),
    ("other_models", "all figures", "other models", None,
     "no outputs released of LLaVA-v1.6, Qwen-VL, mPLUG-Owl2 (tuned or zero-shot), BLIP2, "
     "Kosmos-2 or the classifiers (Tables 2-4)"),
)  # fmt: skip


class ReleaseLayoutError(ValueError):
    """The folder is not a checkout of the release (names what is missing)."""


@dataclass(frozen=True)
class FigureRow:
    """One line of the reproduction table."""

    key: str
    figure: str
    model: str | None
    published: float | None
    authors: float | None
    ours: float | None
    source: str | None
    note: str


def _accuracy(rows: Sequence[ImportedRow]) -> tuple[float | None, int]:
    """Per image, each once: verdict equals expected, over images with an expected verdict."""
    judged = [r for r in rows if r.expected is not None]
    if not judged:
        return None, 0
    return sum(r.verdict == r.expected for r in judged) / len(judged), len(judged)


def _published(model: str, key: str) -> float | None:
    return PUBLISHED.get(key) if model == RELEASED_MODEL else None


def _val_rows(scripts: Path, policy: Policy) -> list[FigureRow]:
    out = []
    for path in sorted((scripts / "eval_icm_val").glob("*.json")):
        rows = eval_json_rows(path, policy)
        authors = paper_val_accuracy([r.image for r in rows], [r.score or 0.0 for r in rows],
                                     policy)  # fmt: skip
        ours, n = _accuracy(rows)
        twice = sum(1 for r in rows if r.category == "wearing_stockings")
        note = (
            f"{n} images; the script counts an image under every category keyword its name "
            f"contains ({twice} wearing_stockings images twice, also as stockings); ours "
            "counts each image once"
        )
        out.append(FigureRow("icm_val_r1", "ICM-Val R1", path.stem,
                             _published(path.stem, "icm_val_r1"), authors, ours,
                             _rel(path, scripts), note))  # fmt: skip
    return out


def _test_rows(scripts: Path, policy: Policy) -> list[FigureRow]:
    out = []
    for path in sorted((scripts / "eval_icm_test").glob("*.json")):
        rows = eval_json_rows(path, policy)
        authors = paper_test_accuracy([r.image for r in rows], [r.score or 0.0 for r in rows])
        ours, n = _accuracy(rows)
        flagged = [r for r in rows if (r.score or 0.0) >= PAPER_THRESHOLD]
        tp = sum(1 for r in flagged if not Path(r.image).name.startswith("not-sexy"))
        fp = len(flagged) - tp
        negatives = sum(1 for r in rows if Path(r.image).name.startswith("not-sexy"))
        tn, fn = negatives - fp, len(rows) - len(flagged) - (negatives - fp)
        note = f"{n} UGC images: TP {tp}, FP {fp}, TN {tn}, FN {fn} (the script's table)"
        out.append(FigureRow("icm_test_ugc", "ICM-Test UGC", path.stem,
                             _published(path.stem, "icm_test_ugc"), authors, ours,
                             _rel(path, scripts), note))  # fmt: skip
    return out


def _mqa_rows(scripts: Path, policy: Policy) -> list[FigureRow]:
    mqa = scripts / "eval_mqa"
    mc_ref, qa_ref = mqa / "mc_gt.txt", mqa / "openqa_gt.txt"
    models = sorted({p.stem for p in (mqa / "eval_mc_data").glob("*.txt")}
                    | {p.stem for p in (mqa / "eval_qa_data").glob("*.txt")})  # fmt: skip
    out = []
    for model in models:
        parts = {}
        for task, folder, ref in (("mqa_mc", "eval_mc_data", mc_ref),
                                  ("mqa_qa", "eval_qa_data", qa_ref)):  # fmt: skip
            answers = mqa / folder / f"{model}.txt"
            if answers.is_file() and ref.is_file():
                rows = mqa_rows(answers, ref, policy, task)
                parts[task] = paper_mqa((r.verdict or "", r.expected or "") for r in rows)
        if not parts:
            continue
        correct = sum(t.correct for t in parts.values())
        total = sum(t.total for t in parts.values())
        pooled = correct / total if total else None
        # the script prints the pooled figure under "total", "openqa" and "mc" alike
        note = "the script prints this pooled figure in all three of its columns"
        out.append(FigureRow("mqa", "MQA total", model, _published(model, "mqa"),
                             pooled, pooled, "eval_mqa", f"{correct}/{total}; {note}"))  # fmt: skip
        for task, label in (("mqa_mc", "multiple choice"), ("mqa_qa", "yes/no + open")):
            if task in parts:
                tally = parts[task]
                out.append(FigureRow(task, f"MQA {label}", model, None, pooled,
                                     tally.accuracy, "eval_mqa",
                                     f"{tally.correct}/{tally.total}; the script's column "
                                     "shows the pooled figure"))  # fmt: skip
    return out


def _meq_rows(scripts: Path) -> list[FigureRow]:
    out = []
    meq = scripts / "eval_meq"
    for folder in sorted(p for p in meq.iterdir() if p.is_dir()) if meq.is_dir() else []:
        try:
            judgments = read_judgments(folder)
        except MEQFileError:
            continue
        script, ours = script_meq(judgments), our_meq(judgments)
        unscored = ours.files - ours.scored
        note = (
            f"{ours.files} GPT-4o judgments, {ours.scored} with a readable score table; "
            "mean accuracy / 100. The script never resets its scores between files (an "
            "unreadable judgment takes the previous file's); ours excludes it"
            + (f" ({unscored} here)" if unscored else " (none here)")
        )
        out.append(FigureRow("meq", "MEQ", folder.name,
                             _published(folder.name, "meq"), script.meq, ours.meq,
                             _rel(folder, scripts), note))  # fmt: skip
    return out


def _rel(path: Path, scripts: Path) -> str:
    return f"eval_scripts/{path.relative_to(scripts).as_posix()}"


def reproduce(release: Path, policy: Policy) -> list[FigureRow]:
    """Every figure the release's outputs give, then the published figures they cannot.

    Raises:
        ReleaseLayoutError: ``release`` has no ``eval_scripts`` folder, or no output in it.
        ImportFormatError: a released file not in its format (named, with the entry).
    """
    scripts = Path(release) / "eval_scripts"
    if not scripts.is_dir():
        raise ReleaseLayoutError(
            f"{release}: no eval_scripts/ folder; give a checkout of zhaoyuzhi/ICM-Assistant"
        )
    rows = [
        *_val_rows(scripts, policy),
        *_test_rows(scripts, policy),
        *_mqa_rows(scripts, policy),
        *_meq_rows(scripts),
    ]
    if not rows:
        raise ReleaseLayoutError(f"{scripts}: no released outputs found (eval_icm_val/*.json, ...)")
    rows += [
        FigureRow(key, figure, model, published, None, None, None, f"cannot be reproduced: {why}")
        for key, figure, model, published, why in UNRELEASED
    ]
    return rows


def rows_json(rows: Sequence[FigureRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
