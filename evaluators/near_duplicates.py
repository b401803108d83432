"""Near-duplicate texts across samples: explanations, descriptions and Q-A items that are
near-copies of another sample's, found with MinHash and locality-sensitive hashing
(``datasketch``), each pair reported with its similarity.

Similarity is the Jaccard index of the two texts' word shingles (``SHINGLE`` words in a row,
after lower-casing and dropping punctuation; a text shorter than that is one shingle of all its
words). LSH proposes candidate pairs above ``threshold``; each candidate's exact Jaccard is then
computed from the shingle sets, so a reported similarity is measured, not estimated.

Texts are compared only within a kind (explanation with explanation, Q-A item with Q-A item),
and only across samples: a sample's own R1 and R2 explanations may share sentences by design.
Identical texts are grouped first, so a Q-A item repeated in 3,505 samples of the release ("Is
the image sexy? Yes.") costs one LSH entry, and its pairs are counted, not listed one by one.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from math import comb
from typing import Any

SHINGLE = 3
DEFAULT_THRESHOLD = 0.7
NUM_PERM = 64
KINDS = ("description", "explanation", "qa")

_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Text:
    """One text of one sample: ``kind`` (description, explanation, qa) and ``key`` (the rule
    variant of an explanation, the position of a Q-A item)."""

    sample_id: str
    kind: str
    key: str
    text: str


@dataclass(frozen=True)
class Pair:
    """Two texts of different samples, near-copies of each other."""

    kind: str
    a: Text
    b: Text
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "similarity": round(self.similarity, 4),
            "a": {"sample_id": self.a.sample_id, "key": self.a.key, "text": self.a.text},
            "b": {"sample_id": self.b.sample_id, "key": self.b.key, "text": self.b.text},
        }


@dataclass
class DuplicateReport:
    """Pairs by kind: how many (counted over every pair of samples), and examples with their
    similarity, most similar first."""

    threshold: float
    texts: dict[str, int] = field(default_factory=dict)
    pair_counts: dict[str, int] = field(default_factory=dict)
    exact_pair_counts: dict[str, int] = field(default_factory=dict)
    samples_involved: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[Pair]] = field(default_factory=dict)

    def to_dict(self, examples: int = 5) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "shingle_words": SHINGLE,
            "texts": self.texts,
            "pairs": self.pair_counts,
            "exact_pairs": self.exact_pair_counts,
            "samples_involved": self.samples_involved,
            "examples": {k: [p.to_dict() for p in v[:examples]] for k, v in self.examples.items()},
        }


def shingles(text: str, size: int = SHINGLE) -> frozenset[str]:
    """The text's word ``size``-grams (all its words as one shingle when it is shorter)."""
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + size]) for i in range(len(words) - size + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)


def _minhash(items: frozenset[str], num_perm: int) -> Any:
    from datasketch import MinHash  # imported on use: only the duplicate search needs it

    mh = MinHash(num_perm=num_perm, seed=1)
    mh.update_batch([s.encode("utf-8") for s in items])
    return mh


class NearDuplicateIndex:
    """An LSH index of texts that grows as samples are accepted: :meth:`matches` says which
    indexed texts of other samples a new text nearly copies (the generation-time check)."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, num_perm: int = NUM_PERM) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.num_perm = num_perm
        self._lsh: dict[str, Any] = {}
        self._make = lambda: MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._texts: dict[str, tuple[Text, frozenset[str]]] = {}

    def __len__(self) -> int:
        return len(self._texts)

    def matches(self, text: Text) -> list[tuple[Text, float]]:
        """Indexed texts of the same kind, from other samples, with Jaccard >= threshold."""
        grams = shingles(text.text)
        lsh = self._lsh.get(text.kind)
        if not grams or lsh is None:
            return []
        found = []
        for key in lsh.query(_minhash(grams, self.num_perm)):
            other, other_grams = self._texts[key]
            if other.sample_id == text.sample_id:
                continue
            similarity = jaccard(grams, other_grams)
            if similarity >= self.threshold:
                found.append((other, similarity))
        return sorted(found, key=lambda m: (-m[1], m[0].sample_id, m[0].key))

    def add(self, text: Text) -> None:
        grams = shingles(text.text)
        key = f"{text.kind}\x1f{text.sample_id}\x1f{text.key}"
        if not grams or key in self._texts:
            return
        lsh = self._lsh.setdefault(text.kind, self._make())
        lsh.insert(key, _minhash(grams, self.num_perm))
        self._texts[key] = (text, grams)


def find_pairs(
    texts: Iterable[Text],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = NUM_PERM,
    examples: int = 20,
) -> DuplicateReport:
    """Near-duplicate pairs across samples, by kind (see the module docstring)."""
    from datasketch import MinHashLSH

    by_kind: dict[str, dict[str, list[Text]]] = defaultdict(lambda: defaultdict(list))
    for text in texts:
        normal = " ".join(_WORD.findall(text.text.lower()))
        if normal:
            by_kind[text.kind][normal].append(text)
    report = DuplicateReport(threshold=threshold)
    for kind, groups in sorted(by_kind.items()):
        report.texts[kind] = sum(len(g) for g in groups.values())
        exact = sum(_cross_sample_pairs(g) for g in groups.values())
        involved: set[str] = set()
        for group in groups.values():
            if _cross_sample_pairs(group):
                involved.update(t.sample_id for t in group)
        listed: list[Pair] = [
            Pair(kind, a, b, 1.0)
            for group in groups.values()
            for a, b in itertools.islice(_cross_pairs(group), 3)
        ]
        near = 0
        distinct = list(groups)
        grams = [shingles(normal) for normal in distinct]
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        hashes = []
        for n, g in enumerate(grams):
            mh = _minhash(g, num_perm)
            hashes.append(mh)
            lsh.insert(str(n), mh)
        for n, mh in enumerate(hashes):
            for found in lsh.query(mh):
                m = int(found)
                if m <= n:
                    continue
                similarity = jaccard(grams[n], grams[m])
                if similarity < threshold:
                    continue
                ga, gb = groups[distinct[n]], groups[distinct[m]]
                count = _cross_group_pairs(ga, gb)
                if not count:
                    continue
                near += count
                involved.update(t.sample_id for t in ga + gb)
                a, b = next(_cross_group_iter(ga, gb))
                listed.append(Pair(kind, a, b, similarity))
        report.exact_pair_counts[kind] = exact
        report.pair_counts[kind] = exact + near
        report.samples_involved[kind] = len(involved)
        listed.sort(key=lambda p: (-p.similarity, p.a.sample_id, p.b.sample_id))
        report.examples[kind] = _spread(listed, examples)
    return report


def _spread(pairs: Sequence[Pair], n: int) -> list[Pair]:
    """Up to ``n`` examples: the near (not identical) pairs first, most similar first, then
    identical ones, so the listing shows what the count alone cannot."""
    near = [p for p in pairs if p.similarity < 1.0]
    same = [p for p in pairs if p.similarity >= 1.0]
    return (near + same)[:n]


def _cross_sample_pairs(group: Sequence[Text]) -> int:
    """Pairs of texts in ``group`` that belong to different samples."""
    per_sample = Counter(t.sample_id for t in group)
    return comb(len(group), 2) - sum(comb(k, 2) for k in per_sample.values())


def _cross_pairs(group: Sequence[Text]) -> Iterable[tuple[Text, Text]]:
    for a, b in itertools.combinations(group, 2):
        if a.sample_id != b.sample_id:
            yield a, b


def _cross_group_pairs(a: Sequence[Text], b: Sequence[Text]) -> int:
    ca, cb = Counter(t.sample_id for t in a), Counter(t.sample_id for t in b)
    return len(a) * len(b) - sum(n * cb.get(s, 0) for s, n in ca.items())


def _cross_group_iter(a: Sequence[Text], b: Sequence[Text]) -> Iterator[tuple[Text, Text]]:
    for x in a:
        for y in b:
            if x.sample_id != y.sample_id:
                yield x, y


def render_text(report: DuplicateReport, examples: int = 3) -> str:
    """Counts by kind and a few example pairs with their similarity."""
    lines = [
        f"near-duplicates across samples (Jaccard of {SHINGLE}-word shingles >= "
        f"{report.threshold:g}):"
    ]
    for kind in report.texts:
        lines.append(
            f"  {kind}: {report.pair_counts[kind]} pairs ({report.exact_pair_counts[kind]} "
            f"identical) among {report.texts[kind]} texts; {report.samples_involved[kind]} "
            "samples involved"
        )
        for pair in report.examples.get(kind, [])[:examples]:
            lines.append(
                f"    {pair.similarity:.2f}  {pair.a.sample_id}[{pair.a.key}] ~ "
                f"{pair.b.sample_id}[{pair.b.key}]: {_clip(pair.a.text)}"
            )
    if not report.texts:
        lines.append("  no texts")
    return "\n".join(lines)


def _clip(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
