"""Read the paper's released MEQ judgments: one GPT-4o judgment per file, as its scripts wrote them.

The authors' repository (zhaoyuzhi/ICM-Assistant, ``eval_scripts/eval_meq/<model>/``) holds one
text file per ICM-Val image (379 for ICM-LLaVA-v1.5-7B): the image name on the first line, then
``Human content:`` (the human-written reference explanation), ``Algorithm content:`` (the model's
explanation) and ``ChatGPT evaluation:``, a markdown table of the four 0-100 scores
(``| Accuracy | 90 |``) followed by GPT-4o's comment.

:func:`read_judgment` reads one file, :func:`meq_cases` a folder of them as
:class:`~evaluators.calibration.MEQCase` rows (what ``icm judge calibrate --set`` reads from a
JSONL, so the folder itself can be given to ``--set``). Two aggregations are offered:

- :func:`script_meq`, the authors' ``eval_meq/eval.py``: a score row is read only after a line
  containing ``--`` and only from a line with exactly three ``|``; its ``cur_*`` variables are
  never reset between files, so a file whose table cannot be read takes the *previous* file's
  scores (0 only when no file before it had any); the mean is over every file;
- :func:`our_meq`: the mean over the files whose four scores were read; the others are counted
  and excluded, never zeroed and never borrowed from a neighbour.

The MEQ the paper reports is the mean accuracy / 100.
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evaluators.judge_schemas import MEQ_CRITERIA

REFERENCE_HEAD = "Human content:"
CANDIDATE_HEAD = "Algorithm content:"
JUDGMENT_HEAD = "ChatGPT evaluation:"
#: the row labels of the judgment table, in the script's spelling
SCRIPT_LABELS = {
    "accuracy": "Accuracy",
    "preciseness": "Preciseness",
    "comprehensiveness": "Comprehensiveness",
    "fluency": "Fluency",
}


class MEQFileError(ValueError):
    """A judgment file without the parts every released file has; names the file."""


@dataclass(frozen=True)
class MEQJudgment:
    """One released judgment file."""

    path: Path
    image: str
    reference: str
    candidate: str
    scores: dict[str, float] = field(default_factory=dict)
    """The four scores as our reader finds them (empty when the table cannot be read)."""
    script_scores: dict[str, int] = field(default_factory=dict)
    """What the authors' script reads from this file alone (its own line rules)."""

    @property
    def scored(self) -> bool:
        return set(self.scores) == set(MEQ_CRITERIA)


def _section(lines: Sequence[str], head: str, heads: Sequence[str]) -> str:
    """The text between ``head`` and the next of ``heads``, lines joined by spaces."""
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == head) + 1
    except StopIteration:
        return ""
    out = []
    for line in lines[start:]:
        if line.strip() in heads:
            break
        out.append(line.strip())
    return " ".join(part for part in out if part)


def _table_scores(lines: Sequence[str]) -> dict[str, float]:
    """The scores of the judgment's table: any row ``| <criterion> | <number> |``."""
    scores: dict[str, float] = {}
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2:
            continue
        name = cells[0].lower()
        if name in SCRIPT_LABELS and name not in scores:
            try:
                scores[name] = float(cells[1])
            except ValueError:
                continue
    return scores


def _script_scores(lines: Sequence[str]) -> dict[str, int]:
    """``get_all_acc``'s reading of one file: after a line containing ``--``, a line with
    exactly three ``|`` that names a criterion sets it (``int`` of the cell before the last
    ``|``; the script would crash on a non-number, we skip it)."""
    found: dict[str, int] = {}
    begin = None
    for j, line in enumerate(lines):
        if "--" in line:
            begin = j
        if begin is not None and j > begin and line.count("|") == 3:
            for key, label in SCRIPT_LABELS.items():
                if label in line:
                    with contextlib.suppress(ValueError):
                        found[key] = int(line.split("|")[-2].strip())
    return found


def read_judgment(path: Path) -> MEQJudgment:
    """One judgment file. Raises :class:`MEQFileError` when it has no image line, reference or
    candidate (an unreadable score table is not an error: the judgment is unscored)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    heads = (REFERENCE_HEAD, CANDIDATE_HEAD, JUDGMENT_HEAD)
    image = next((line.strip() for line in lines if line.strip()), "")
    reference = _section(lines, REFERENCE_HEAD, heads)
    candidate = _section(lines, CANDIDATE_HEAD, heads)
    missing = [name for name, value in (("image name", image), (REFERENCE_HEAD, reference),
                                        (CANDIDATE_HEAD, candidate)) if not value]  # fmt: skip
    if missing or image in heads:
        raise MEQFileError(f"{path}: not a released MEQ judgment (no {', '.join(missing)})")
    judged = lines[next((i for i, ln in enumerate(lines) if ln.strip() == JUDGMENT_HEAD), 0) :]
    return MEQJudgment(
        path=Path(path),
        image=image,
        reference=reference,
        candidate=candidate,
        scores=_table_scores(judged),
        script_scores=_script_scores(lines),
    )


def judgment_files(folder: Path) -> list[Path]:
    """The ``.txt`` files under ``folder``, in sorted order (the script walks the folder in the
    file system's order; the sorted order makes the result the same on every machine)."""
    files = sorted(p for p in Path(folder).rglob("*.txt") if p.is_file())
    if not files:
        raise MEQFileError(f"{folder}: no MEQ judgment files (*.txt)")
    return files


def read_judgments(folder: Path) -> list[MEQJudgment]:
    return [read_judgment(p) for p in judgment_files(folder)]


def folder_sha256(folder: Path) -> str:
    """One hash of the judgment files' names and bytes (what a calibration records)."""
    digest = hashlib.sha256()
    for path in judgment_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class MEQFigures:
    """Per-criterion means (0-100), how many files, and how many were scored."""

    means: dict[str, float | None]
    files: int
    scored: int

    @property
    def meq(self) -> float | None:
        """The paper's MEQ: the mean accuracy / 100."""
        accuracy = self.means.get("accuracy")
        return None if accuracy is None else accuracy / 100


def script_meq(judgments: Sequence[MEQJudgment]) -> MEQFigures:
    """``eval_meq/eval.py``'s figures, its carry-over included (see the module docstring)."""
    current: dict[str, int] = {}
    rows: list[dict[str, int]] = []
    for judgment in judgments:
        current = current | judgment.script_scores  # never reset between files
        complete = all(key in current for key in MEQ_CRITERIA)
        rows.append(dict(current) if complete else dict.fromkeys(MEQ_CRITERIA, 0))
    means = {key: (sum(r[key] for r in rows) / len(rows) if rows else None) for key in MEQ_CRITERIA}
    scored = sum(1 for j in judgments if set(j.script_scores) == set(MEQ_CRITERIA))
    return MEQFigures(means=means, files=len(judgments), scored=scored)


def our_meq(judgments: Sequence[MEQJudgment]) -> MEQFigures:
    """The means over the judgments whose four scores were read; the rest are excluded."""
    scored = [j for j in judgments if j.scored]
    means = {
        key: (statistics.fmean(j.scores[key] for j in scored) if scored else None)
        for key in MEQ_CRITERIA
    }
    return MEQFigures(means=means, files=len(judgments), scored=len(scored))
