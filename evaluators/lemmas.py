"""Word normalisation for matching words in generated text: a small, tested, hand-written
reducer instead of an NLP library (no model download is possible offline, and the checks only
need both sides of a comparison reduced the same way).

:func:`lemma` is not a dictionary lemmatiser: it maps inflections of one word onto one key
(``women`` -> ``woman``, ``kissing`` / ``kisses`` -> ``kiss``, ``biting`` / ``bites`` ->
``bit``, ``clothes`` / ``clothing`` -> ``cloth``), which is what "does this text mention X"
needs. Keys are not always English words; never show them to a user.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

_IRREGULAR = {
    "people": "person",
    "persons": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "kids": "kid",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
    "wives": "wife",
    "knives": "knife",
    "lives": "life",
    "leaves": "leaf",
    "shelves": "shelf",
    "wolves": "wolf",
    "halves": "half",
    "calves": "calf",
    "thieves": "thief",
    "wore": "wear",
    "worn": "wear",
    "bit": "bite",
    "bitten": "bite",
    "took": "take",
    "taken": "take",
    "lying": "lie",
    "lay": "lie",
    "dying": "die",
    "died": "die",
    "dead": "die",
    "shown": "show",
    "showed": "show",
    "put": "put",
}

STOPWORDS = frozenset((
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "from", "into",
    "onto", "over", "under", "and", "or", "her", "his", "their", "its", "my", "your", "our",
    "this", "that", "these", "those", "some", "any", "is", "are", "was", "were", "be", "been",
    "being", "it", "they", "she", "he", "there", "here", "as",
))  # fmt: skip
"""Words left out when a phrase is matched: "finger in the mouth" matches "finger in her
mouth". Negations are not stopwords."""

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


_POSSESSIVE = re.compile(r"'s$|s'$|'$")


@functools.lru_cache(maxsize=1 << 16)
def lemma(word: str) -> str:
    """The matching key of one word (see the module docstring).

    Memoised: the critic reduces the same few hundred words (the policy's synonyms, the
    common words of every description) for every sample."""
    w = word.lower()
    w = _POSSESSIVE.sub("", w)
    w = _IRREGULAR.get(w, w)
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("sses", "shes", "ches", "xes", "zes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
        w = w[:-1]
    if len(w) > 3 and w.endswith("y"):
        w = w[:-1] + "i"  # zombies -> zomby -> zombi, like zombie -> zombi
    return w


def words(text: str) -> list[str]:
    """Lower-case word tokens: letters and digits, with an inner apostrophe kept (``don't``)."""
    return list(_tokens(text))


TEXTS_REMEMBERED = 8192
"""How many texts a memoised function of one text keeps (least recently used first out). A
sample's texts are read by its stage checks and read again by its critic a few model calls
later, while the other samples in flight are read in between: at 32 in flight that is some
thousand texts (description, context, arguments, explanations, every Q-A item, feedback)."""


@functools.lru_cache(maxsize=TEXTS_REMEMBERED)
def _tokens(text: str) -> tuple[str, ...]:
    """:func:`words`, memoised: the critic's checks read each text of a sample several times
    (loops, schema echoes, lemmas, the last word)."""
    return tuple(_WORD.findall(text.lower().replace("\u2019", "'")))


def content_lemmas(text: str) -> list[str]:
    """The lemmas of a text's words in order, stopwords left out (the caller's own list)."""
    return list(_content_lemmas(text))


@functools.lru_cache(maxsize=TEXTS_REMEMBERED)
def _content_lemmas(text: str) -> tuple[str, ...]:
    return tuple(lemma(w) for w in words(text) if w not in STOPWORDS)


def contains_phrase(haystack: Sequence[str], phrase: Sequence[str], slack: int = 0) -> bool:
    """Whether the lemma sequence ``phrase`` occurs in ``haystack`` in order, with at most
    ``slack`` other words inside it ("bite lip" in "bites her lower lip" with slack 1)."""
    if not phrase:
        return False
    for start, word in enumerate(haystack):
        if word != phrase[0]:
            continue
        at, extra = start, 0
        for wanted in phrase[1:]:
            nxt = at + 1
            while nxt < len(haystack) and haystack[nxt] != wanted and nxt - at - 1 + extra < slack:
                nxt += 1
            if nxt >= len(haystack) or haystack[nxt] != wanted:
                break
            extra += nxt - at - 1
            at = nxt
        else:
            return True
    return False
