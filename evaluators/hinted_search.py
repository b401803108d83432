"""A case-insensitive pattern searched only where the text could match it.

The critic's deterministic checks search every text of every sample with case-insensitive
patterns of many alternatives (refusal phrases, talk about the pipeline); Python's ``re`` tries
each alternative at every position, and most texts match none. Each such pattern has words of
which every match holds one; a text holding none of them cannot match, so it is not searched.

Exactness: for ASCII text, ``re.IGNORECASE`` is ASCII case-folding, which ``str.lower`` does
too, so "no hint in the lowered text" implies "no match". Unicode case-folding has pairs that
``lower`` does not map (``ſ`` matches ``s``, the Kelvin sign matches ``k``), so a text with any
non-ASCII character is always searched.
"""

from __future__ import annotations

import re


def hinted_search(
    pattern: re.Pattern[str], hints: tuple[str, ...], text: str
) -> re.Match[str] | None:
    """``pattern.search(text)``; ``hints`` (lower case) are words every match holds one of."""
    if text.isascii():
        lowered = text.lower()
        if not any(hint in lowered for hint in hints):
            return None
    return pattern.search(text)
