"""Classification and MQA metrics, and the bootstrap interval the comparison reports use.

Classification follows the paper's ICM-Val numbers: a moderation model's verdict per image and
rule variant against the rule table's verdict, with the policy's flagged label ("sexy") as the
positive class. A prediction that is not ``ok`` (unparseable, refused, failed), or whose verdict
is missing or not one of the policy's labels, is counted as *unscored*: shown beside the metrics,
never folded into them as a wrong label (an unparseable answer is not a wrong one).

MQA accuracy is the paper's: an answer is right when its first character equals the reference's
first character ("Yes." vs "Yes, ...", "B." vs "B) ...").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from data.policy import load_policy
from data.store.predictions import verdict_predictions

GROUPINGS: dict[str, tuple[str, ...]] = {
    "overall": ("policy_name", "rule_variant"),
    "category": ("policy_name", "rule_variant", "category"),
}
"""The groupings ``icm metrics`` prints: per policy and rule variant, then per category too."""


@dataclass(frozen=True)
class Confusion:
    """Counts for the flagged (positive) class; ``unscored`` predictions are outside them."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    unscored: int = 0

    @property
    def scored(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.scored)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        """Harmonic mean of precision and recall; None when either is undefined, 0 when both
        are 0 (every flagged image missed and nothing else flagged)."""
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "scored": self.scored,
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def confusion(expected: Iterable[bool | None], predicted: Iterable[bool | None]) -> Confusion:
    """Counts from parallel sequences of flags; None in either means unscored."""
    tp = fp = tn = fn = unscored = 0
    for truth, guess in zip(expected, predicted, strict=True):
        if truth is None or guess is None:
            unscored += 1
        elif truth and guess:
            tp += 1
        elif guess:
            fp += 1
        elif truth:
            fn += 1
        else:
            tn += 1
    return Confusion(tp, fp, tn, fn, unscored)


FlaggedLookup = Callable[[str, str], bool | None]
"""(policy name, verdict label) -> whether the label is the flagged one; None: not a label."""


def policy_flags(policy_names: Iterable[str]) -> FlaggedLookup:
    """A lookup backed by the shipped (or given) policy files, each loaded once.

    Raises ``PolicyError`` for a policy that cannot be loaded: without it the flagged label is
    unknown, and guessing it would silently invert the metrics.
    """
    policies = {name: load_policy(name) for name in set(policy_names)}

    def lookup(policy: str, label: str) -> bool | None:
        verdicts = policies[policy].verdicts
        return verdicts[label].flagged if label in verdicts else None

    return lookup


def flag_predictions(frame: pd.DataFrame, flagged: FlaggedLookup) -> pd.DataFrame:
    """Add ``expected_flag`` and ``predicted_flag`` (True / False / None) to prediction rows.

    ``predicted_flag`` is None for a row whose status is not ``ok`` or whose verdict is not a
    label of its policy; ``expected_flag`` is None where the expected verdict is missing.
    """
    out = frame.copy()

    def flag(policy: Any, label: Any) -> bool | None:
        if not isinstance(label, str) or not label:
            return None
        return flagged(str(policy), label)

    out["expected_flag"] = [
        flag(p, v) for p, v in zip(out["policy_name"], out["expected_verdict"], strict=True)
    ]
    out["predicted_flag"] = [
        flag(p, v) if status == "ok" else None
        for p, v, status in zip(out["policy_name"], out["verdict"], out["status"], strict=True)
    ]
    return out


def classification_table(
    frame: pd.DataFrame, flagged: FlaggedLookup, by: Sequence[str] = GROUPINGS["overall"]
) -> list[dict[str, Any]]:
    """One dict per group: the group's keys, confusion counts, accuracy, precision, recall, F1.

    ``frame`` holds prediction rows (the ``predictions`` table's columns ``policy_name``,
    ``rule_variant``, ``category``, ``expected_verdict``, ``verdict``, ``status``).
    """
    if frame.empty:
        return []
    flagged_rows = flag_predictions(frame, flagged)
    keys = list(by)
    grouped = flagged_rows.fillna({k: "" for k in keys}).groupby(keys, sort=True, dropna=False)
    rows = []
    for values, group in grouped:
        counts = confusion(group["expected_flag"].tolist(), group["predicted_flag"].tolist())
        key_values = values if isinstance(values, tuple) else (values,)
        rows.append({**dict(zip(keys, key_values, strict=True)), **counts.as_dict()})
    return rows


def predictions_frame(store: Any, run_id: str) -> pd.DataFrame:
    """The verdict prediction rows of one run (MQA answers left out), as
    :func:`classification_table` reads them."""
    return verdict_predictions(store, run_id)


# ----------------------------------------------------------------------------- MQA
@dataclass(frozen=True)
class MQAResult:
    correct: int
    scored: int
    unscored: int

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.correct, self.scored)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy}


def first_character(answer: str) -> str:
    """The character MQA compares: the first one after whitespace and an opening bracket or
    quote ("(B)" and "B." both give "B"), upper-cased."""
    return answer.strip().lstrip("([\"'").strip()[:1].upper()


def mqa_accuracy(pairs: Iterable[tuple[str | None, str]]) -> MQAResult:
    """(predicted answer, reference answer) pairs; a None prediction (the model gave no
    parseable answer) is unscored, an empty string is an answer and is wrong."""
    correct = scored = unscored = 0
    for predicted, reference in pairs:
        if predicted is None:
            unscored += 1
            continue
        scored += 1
        got = first_character(predicted)
        correct += bool(got) and got == first_character(reference)
    return MQAResult(correct, scored, unscored)


# ----------------------------------------------------------------------------- bootstrap
def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    statistic: Callable[..., Any] = np.mean,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` (vectorised over axis 1), seeded so a
    report is reproducible. None for no values; a single value gives a zero-width interval."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return None
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    samples = data[rng.integers(0, data.size, size=(resamples, data.size))]
    stats = np.asarray(statistic(samples, axis=1), dtype=float)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)
