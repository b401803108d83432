"""The fast paths of the garbage checks (evaluators/text_checks.py) give the verdicts of the
plain definitions they replace.

The critic runs ``find_loop`` and ``json_residue`` on every text of every sample, so both skip
work that cannot find anything (a loop needs words that occur again; each residue pattern needs
one of a few characters). These tests keep the plain definitions, written the obvious way, and
compare them with the real functions on thousands of seeded random texts built to hit every
shape: loops of every length planted at random places, repeated sentences and phrases, JSON
fragments and schema keywords among ordinary words.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from evaluators.lemmas import words
from evaluators.text_checks import _JSON_RESIDUE, _PLAIN_ENGLISH, _SENTENCES, find_loop, qa_problems
from evaluators.text_checks import json_residue as fast_json_residue

_WORDS = ("the", "image", "is", "sexy", "not", "a", "woman", "citing", "description", "very",
          "red", "lips", "and", "it", "was", "shows", "alpha", "beta", "gamma", "minimum", "type",
          "key_elements")  # fmt: skip
_BITS = ("{", "}", "[", "]", "'", '"', "`", ":", '"key":', "minLength", "anyOf", "$ref",
         "$schema", "exclusiveMinimum", "maximum", "Properties :", "REQUIRED:", "enum:",
         "yes_no", "items\":", "I", "Map", "LIP")  # fmt: skip


def plain_find_loop(text: str) -> str | None:
    """``find_loop`` as first written: every start and length tried, slice against slice."""
    tokens = words(text)
    n = len(tokens)
    for k in range(1, min(12, n // 2) + 1):
        need = 4 if k == 1 else 3 if k <= 4 else 2
        i = 0
        while i + k * need <= n:
            copies = 1
            while tokens[i + copies * k : i + (copies + 1) * k] == tokens[i : i + k]:
                copies += 1
            if copies >= need:
                return f"repeats '{' '.join(tokens[i : i + k])}' {copies} times in a row"
            i += 1
    seen: set[tuple[str, ...]] = set()
    for sentence in _SENTENCES.split(text):
        key = tuple(words(sentence))
        if len(key) >= 5 and key in seen:
            clipped = sentence.strip()
            clipped = clipped if len(clipped) <= 100 else clipped[:97].rstrip() + "..."
            return f"writes the sentence '{clipped}' twice"
        seen.add(key)
    for size, most in ((8, 3), (5, 5)):
        grams = Counter(tuple(tokens[i : i + size]) for i in range(n - size + 1))
        gram, times = grams.most_common(1)[0] if grams else ((), 0)
        if times >= most:
            return f"writes '{' '.join(gram)}' {times} times"
    # by letters, in a text where a word of 4+ letters occurs 5 times: a 20-letter run 5 times
    if any(c >= 5 and len(w) >= 4 for w, c in Counter(tokens).items()):
        letters = "".join(re.findall(r"[^\W\d_]+", text.lower()))
        runs = Counter(letters[i : i + 20] for i in range(len(letters) - 19))
        run, times = runs.most_common(1)[0] if runs else ("", 0)
        if times >= 5:
            return f"writes '{run}' (letters only) {times} times"
    return None


def plain_json_residue(text: str) -> str | None:
    """``json_residue`` as first written: every pattern scanned over every text."""
    for pattern, what in _JSON_RESIDUE:
        for match in pattern.finditer(text):
            if match.group(0).lower() not in _PLAIN_ENGLISH:
                return f"{what} ('{match.group(0).strip()}')"
    return None


#: each shape at its smallest, between words that occur once (no run longer than the shape)
EDGES = [
    "one two three four five. Alpha beta. One two three four five.",
    "one two three four. Alpha beta. One two three four.",
    " ".join(f"a b c d e x{i}" for i in range(5)),
    " ".join(f"a b c d e x{i}" for i in range(4)),
    " ".join(f"a b c d e f g h x{i}" for i in range(3)),
    " ".join(f"a b c d e f g h x{i}" for i in range(2)),
    "x so so so so y",
    "x so so so y",
    "x a b a b a b y",
    "x a b a b y",
    "u " + "a b c d e f g h i j k l " * 2 + "v",
    "u " + "a b c d e f g h i j k l m " * 2 + "v",
]


def random_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = list(EDGES)
    for _ in range(count):
        shape = rng.randrange(3)
        vocab = _WORDS[: rng.randint(3, len(_WORDS))]
        if shape == 0:  # a run of words planted several times in a row
            body = [rng.choice(vocab) for _ in range(rng.randint(0, 40))]
            run = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 13)))
            at = rng.randint(0, len(body))
            texts.append(" ".join(body[:at] + [run] * rng.randint(1, 5) + body[at:]))
        elif shape == 1:  # sentences drawn from a small pool: repeats, far apart or not
            pool = [
                " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 10)))
                for _ in range(rng.randint(2, 6))
            ]
            sep = rng.choice([". ", "! ", "\n", "? ", ", ", " "])
            texts.append(sep.join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
        else:  # JSON bits and schema words among ordinary words
            parts = [rng.choice(_BITS) if rng.random() < 0.15 else rng.choice(vocab)
                     for _ in range(rng.randint(0, 30))]  # fmt: skip
            texts.append(" ".join(parts) if rng.random() < 0.5 else "".join(parts))
    return texts


def test_find_loop_matches_its_plain_definition() -> None:
    texts = random_texts(13, 4000)
    found = [find_loop(t) for t in texts]
    assert found == [plain_find_loop(t) for t in texts]
    # the texts exercise every shape, and clean texts too
    kinds = Counter(re.sub(r" '.*", "", f) if f else None for f in found)
    assert kinds["repeats"] > 500 and kinds["writes the sentence"] > 50 and kinds[None] > 500
    assert any(f and re.match(r"writes '[^']*' \d+ times$", f) for f in found)


def test_json_residue_matches_its_plain_definition() -> None:
    texts = random_texts(31, 4000)
    found = [fast_json_residue(t) for t in texts]
    assert found == [plain_json_residue(t) for t in texts]
    kinds = Counter(f.split(" (")[0] if f else None for f in found)
    assert len(kinds) == 6  # five kinds of residue, and texts without any


def _qa_set(texts: list[str]) -> tuple[dict[str, list[dict[str, object]]], list[str]]:
    """A Q-A set built from ten ``texts``, and the texts as placed in it (questions, options
    and open answers: the ones checked for residue)."""
    placed = [f"{texts[0]}?", f"{texts[1]}?", *texts[2:6], f"What {texts[6]}?", f"{texts[7]}.",
              f"How {texts[8]}?", f"{texts[9]}."]  # fmt: skip
    qa: dict[str, list[dict[str, object]]] = {
        "yes_no": [{"question": placed[0], "answer": "No"}],
        "multiple_choice": [{"question": placed[1], "options": placed[2:6], "answer": "A"}],
        "what": [{"question": placed[6], "answer": placed[7]}],
        "how": [{"question": placed[8], "answer": placed[9]}],
    }
    return qa, placed


def test_qa_problems_scans_a_set_at_once_and_finds_residue_in_any_one_text() -> None:
    # qa_problems looks for residue text by text only when the whole set holds a hint of it:
    # its verdicts must be those of scanning every text (the plain definition).
    rng = random.Random(7)
    found = 0
    for _ in range(300):
        texts = [" ".join(rng.choices(_WORDS[:18], k=rng.randint(2, 6))) for _ in range(10)]
        texts[rng.randrange(10)] += " " + rng.choice(_BITS)
        qa, placed = _qa_set(texts)
        reported = [p for p in qa_problems(qa) if "contains" in p]
        expected = [r for t in placed if (r := plain_json_residue(t))]
        assert len(reported) == len(expected), (placed, reported)
        assert all(e in r for e, r in zip(expected, reported, strict=True))
        found += bool(expected)
    assert 100 < found < 300  # sets with residue and sets without


#: the demo's accepted lottery argument (bf1bc2f): a loop whose copies misspell each other
LOTTERY_R1 = (
    "The rule R1 states that any depiction of gambling is kept away from children. Since the "
    "image shows a drawn scratch lottery ticket, which is a form of gambling, it falls under "
    "this category. The ticket is a flat graphic, not a photo, and contains text in the form of "
    "a scratch card with the winning numbers and ticket price. The ticket is a flatgraphic, not "
    "a photo, and features a yellow background with orange and white accents. The ticket is a "
    "flat graphics, not a photo, and the numbers 'LUCKY 7 LOTTERY' and 'SCRATCH & WIN' are "
    "prominently displayed. The ticket is a flatgraphics, not a photo, and it is a flat graphic, "
    "not photo, and the atmosphere is flat graphics, not photo. The ticket is a flat.graphics, "
    "not a photo, and its intent is to inform the audience of the winning numbers and ticket "
    "price."
)


def test_a_loop_whose_copies_misspell_each_other_is_found_by_its_letters() -> None:
    assert find_loop(LOTTERY_R1) == "writes 'theticketisaflatgrap' (letters only) 5 times"
    # a released, human-checked text that names "the person in stockings" four times passes
    person = (
        "The person in the stockings appears to be leaning on their knee. The blazer worn by "
        "the person in stockings is well-fitted. The way the person in stockings is sitting "
        "with their legs crossed is casual. Stockings on the person in stockings are white."
    )
    assert find_loop(person) is None
