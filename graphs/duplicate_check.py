"""The optional near-duplicate check of a generation run (setting ``reject_near_duplicates``,
off by default): a sample the critic accepted is rejected when its description or one of its
explanations nearly copies (Jaccard of word shingles >= ``near_duplicate_threshold``) a text of
a sample accepted before it in the same run.

Descriptions and explanations only: Q-A items are short and generic ("Is the image sexy?
Yes.") and repeat legitimately across samples; ``icm dataset`` reports them. The index is seeded
from the run's accepted samples in the store, so a resumed run compares with what it already
accepted. It lives in the process that queues outcomes: the in-process executor and
``--workers`` (per shard), not across Ray actors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from evaluators.near_duplicates import NearDuplicateIndex, Text

SCREENED_KINDS = ("description", "explanation")
REASON_PREFIX = "near_duplicate"


class DuplicateScreen:
    """Accepted texts so far, and the check of each newly accepted sample against them."""

    def __init__(self, threshold: float, seed: Iterable[Mapping[str, Any]] = ()) -> None:
        self.index = NearDuplicateIndex(threshold=threshold)
        self._lock = threading.Lock()
        for row in seed:
            if row["kind"] in SCREENED_KINDS and row["text"]:
                self.index.add(Text(row["sample_id"], row["kind"], row["key"], row["text"]))

    @staticmethod
    def texts_of(sample_id: str, out: Mapping[str, Any]) -> list[Text]:
        texts = []
        if out.get("description"):
            texts.append(Text(sample_id, "description", "", str(out["description"])))
        for rule, item in (out.get("explanations") or {}).items():
            if isinstance(item, Mapping) and item.get("explanation"):
                texts.append(Text(sample_id, "explanation", str(rule), str(item["explanation"])))
        return texts

    def screen(self, sample_id: str, out: dict[str, Any]) -> dict[str, Any]:
        """``out`` unchanged (and its texts indexed) when nothing is copied; else ``out``
        rejected, each copied text named with the sample it repeats and the similarity."""
        texts = self.texts_of(sample_id, out)
        with self._lock:
            reasons = []
            for text in texts:
                found = self.index.matches(text)
                if found:
                    other, similarity = found[0]
                    where = text.kind if not text.key else f"{text.kind}[{text.key}]"
                    reasons.append(
                        f"{REASON_PREFIX}: {where} repeats sample {other.sample_id} "
                        f"(Jaccard {similarity:.2f})"
                    )
            if reasons:
                return {**out, "status": "rejected", "reasons": [*out.get("reasons", []),
                                                                 *reasons]}  # fmt: skip
            for text in texts:
                self.index.add(text)
        return out
