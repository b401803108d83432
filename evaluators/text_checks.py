"""Deterministic checks that catch garbage text: looping output, a text that states two verdict
labels, JSON or schema residue in prose, key elements that are not in the description, Q-A
answers that are empty, punctuation or fragments, and attribute mentions read through the
policy's synonyms and word lemmas.

Small local models under constrained decoding write all of these (the offline demo's SmolLM2
wrote "The image is sexy, citing the description, citing the description, ..." and a What
answer ``No'}], ``), and none of them is caught by the label checks of
:mod:`evaluators.consistency`. Every check here is a pure function returning a named
:class:`Check` whose message says what to change, in words fed back to the stage's model.

They are tuned to reject nothing a capable model writes: the benchmark
``benchmarks/bench_checks_released.py`` measures their rejection rate on the released
ICM-Instruct records (mostly good text). :func:`with_garbage_checks` adds them to the critic's
checks over a pipeline state.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from data.policy_models import Policy
from evaluators.consistency import Check, wanted
from evaluators.lemmas import (
    STOPWORDS,
    TEXTS_REMEMBERED,
    contains_phrase,
    content_lemmas,
    lemma,
    words,
)

# ----------------------------------------------------------------------------- looping text

_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")


def _clip(text: str, limit: int = 100) -> str:
    """A quote short enough for feedback to a model."""
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


#: enough ones for the longest run :func:`find_loop` looks for (12 words, 2 copies)
_ONES = b"\1" * 64


def _tandem_copies(k: int) -> int:
    """Copies in a row of a k-word run that make a loop: 4 of one word ("very very very
    very"), 3 of a short phrase, 2 of a run as long as a clause."""
    return 4 if k == 1 else 3 if k <= 4 else 2


#: (run length k, copies in a row that make a loop) for the runs :func:`find_loop` looks for
_TANDEM = tuple((k, _tandem_copies(k)) for k in range(1, 13))


@functools.lru_cache(maxsize=TEXTS_REMEMBERED)  # a stage check's texts, read again by the critic
def find_loop(text: str) -> str | None:
    """A description of the looping in ``text``, or None.

    Three shapes: a run of words repeated back to back (``citing the description, citing the
    description, ...``); the same sentence of five or more words written twice; one run of
    eight words written three times anywhere, or of five words five times.
    """
    tokens = words(text)
    n = len(tokens)
    # Each shape is a run of words that occurs again, so every word of it occurs at least
    # twice in the text (three or five times for the last shape). The critic runs this on
    # every text of every sample: the words are counted once, and a shape is looked for only
    # where enough words in a row occur that often, which in most texts is nowhere.
    tally = Counter(tokens)
    counts = [tally[t] for t in tokens]
    twice = bytes(map((2).__le__, counts))  # 1 where the word occurs at least twice
    longest = max(map(len, twice.split(b"\0")))  # most words in a row that occur again
    for k, need in _TANDEM[: n // 2]:
        if k * need > longest:
            continue
        # same[j] == 1 where word j equals word j + k: the k words at i are followed by c
        # copies of themselves exactly where same[i : i + c * k] is all ones, so the first run
        # of k * (need - 1) ones is the first loop of this length.
        same = bytes(map(operator.eq, tokens, tokens[k:]))
        i = same.find(_ONES[: k * (need - 1)])
        if i >= 0:
            end = same.find(b"\0", i)
            copies = 1 + ((len(same) if end < 0 else end) - i) // k
            return f"repeats '{' '.join(tokens[i : i + k])}' {copies} times in a row"
    if _ONES[:5] in twice:  # a sentence's words are a run of the text's words
        seen: set[tuple[str, ...]] = set()
        for sentence in _SENTENCES.split(text):
            key = tuple(words(sentence))
            if len(key) >= 5 and key in seen:
                return f"writes the sentence '{_clip(sentence.strip())}' twice"
            seen.add(key)
    for size, most in ((8, 3), (5, 5)):
        if _ONES[:size] not in bytes(map(most.__le__, counts)):
            continue
        grams = Counter(tuple(tokens[i : i + size]) for i in range(n - size + 1))
        gram, times = grams.most_common(1)[0]
        if times >= most:
            return f"writes '{' '.join(gram)}' {times} times"
    if any(c >= _LETTER_TIMES and len(w) >= 4 for w, c in tally.items()):
        return _letter_loop(text)
    return None


#: a run of this many letters (spaces and punctuation left out) written this many times
_LETTER_RUN, _LETTER_TIMES = 20, 5


def _letter_loop(text: str) -> str | None:
    """The fourth shape, by letters: a looping small model misspells its own copies ("a flat
    graphic", "a flatgraphic", "a flat.graphics", five times in the demo's accepted lottery
    argument), which no run of whole words catches. Looked for only in a text where a word of
    four or more letters occurs as often (the copies' own words do), since it costs ~0.15 ms
    a text."""
    letters = "".join(re.findall(r"[^\W\d_]+", text.lower()))
    runs = Counter(letters[i : i + _LETTER_RUN] for i in range(0, len(letters) - _LETTER_RUN + 1))
    run, times = runs.most_common(1)[0]
    if times < _LETTER_TIMES:
        return None
    return f"writes '{run}' (letters only) {times} times"


def check_no_looping(stage: str, text: str, where: str) -> Check:
    """Looping output (a small model stuck repeating itself) is never data."""
    loop = find_loop(text)
    msg = f"{where} {loop} (looping output); say each point once" if loop else ""
    return Check("no_looping_text", stage, loop is None, msg)


# ----------------------------------------------------------------------------- two labels

_HEDGE = re.compile(
    r"\b(if|whether|although|though|while|whereas|unless|even|might|could|would|may|some|"
    r"someone|others?|rather than|instead of|likely|unlikely|than|vary|varies|subjective|"
    r"perceptions?)\b",
    re.IGNORECASE,
)
_STATING = re.compile(
    r"\b(image|picture|photo|photograph|it|this|scene|content)\b.*"
    r"\b(is|are|was|be|seems?|appears?|looks?|remains?|considered|deemed|rated|classified|"
    r"judged|labell?ed)\b(\W+[\w'-]+){0,3}\W*$",
    re.IGNORECASE,
)
_VERDICT_LINE = re.compile(r"\b(verdict|conclusion|label|answer)\s*:\s*$", re.IGNORECASE)
_NEGATED = re.compile(r"\b(not|never|neither|nor|hardly)\b|n't\b", re.IGNORECASE)
_BREAK = re.compile(r"[,;:()\u2014]|\s-\s|\b(but|and|yet|so|because|however)\b", re.IGNORECASE)
_SIDE_BY_SIDE = re.compile(r"^\s*([,/;|]|-|or|and|vs\.?)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class LabelStatement:
    """A place where a text states a verdict label: ``affirmed`` False for "is not <label>"."""

    label: str
    affirmed: bool
    start: int


@functools.lru_cache(maxsize=256)
def _label_pattern(label: str) -> re.Pattern[str]:
    return re.compile(r"\b" + re.escape(label.lower()) + r"\b")


def _sentence_start(text: str, before: int) -> int:
    """Where the sentence holding position ``before`` starts: after the last ``.!?`` or line
    break before it (0 when there is none)."""
    return max(text.rfind(".", 0, before), text.rfind("!", 0, before),
               text.rfind("?", 0, before), text.rfind("\n", 0, before)) + 1  # fmt: skip


def label_spans(text: str, labels: Iterable[str]) -> list[tuple[int, int, str]]:
    """Occurrences of the labels, sorted; one inside a longer label's occurrence (``sexy`` in
    ``not sexy``) is left out."""
    return list(_label_spans(text, frozenset(labels)))


@functools.lru_cache(maxsize=TEXTS_REMEMBERED)  # read by several checks, then by the critic
def _label_spans(text: str, labels: frozenset[str]) -> tuple[tuple[int, int, str], ...]:
    lowered = text.lower()
    spans = [
        (m.start(), m.end(), label)
        for label in labels
        for m in _label_pattern(label).finditer(lowered)
    ]
    kept = [
        (s, e, label)
        for s, e, label in spans
        if not any(s2 <= s and e <= e2 and (s2, e2) != (s, e) for s2, e2, _ in spans)
    ]
    return tuple(sorted(kept))


def label_statements(text: str, labels: Iterable[str]) -> list[LabelStatement]:
    """The labels the text states of the image, in order.

    A label is stated when its clause (the text since the last comma, colon, ``but``...) has
    the image (or "it", "this", "the scene") as subject and a copula a few words before the
    label ("the image is therefore not sexy"), or when it follows ``Verdict:`` or
    ``Conclusion:``. A clause that hedges ("might be seen as sexy", "although it is sexy to
    some") states nothing, and nor does a label used as an adjective ("a sexy atmosphere").
    """
    return _statements(text, label_spans(text, labels))


def _statements(text: str, spans: Iterable[tuple[int, int, str]]) -> list[LabelStatement]:
    """:func:`label_statements` over spans already found."""
    return list(_statements_of(text, tuple(spans)))


@functools.lru_cache(maxsize=TEXTS_REMEMBERED)  # the critic reads one argument's statements twice
def _statements_of(
    text: str, spans: tuple[tuple[int, int, str], ...]
) -> tuple[LabelStatement, ...]:
    out = []
    for start, _end, label in spans:
        before = text[_sentence_start(text, start) : start]
        breaks = list(_BREAK.finditer(before))
        clause = before[breaks[-1].end() :] if breaks else before
        if ":" in before and _VERDICT_LINE.search(before):  # the pattern ends in a colon
            out.append(LabelStatement(label, True, start))
        elif _STATING.search(clause) and not _HEDGE.search(clause):
            out.append(LabelStatement(label, not _NEGATED.search(clause), start))
    return tuple(out)


def stated_labels(text: str, labels: Sequence[str]) -> list[str]:
    """Distinct labels the text affirms, in order of first statement. With exactly two labels
    a denial affirms the other one ("is not considered sexy" states "not sexy")."""
    return _affirmed(label_statements(text, labels), labels)


def _affirmed(statements: Iterable[LabelStatement], labels: Sequence[str]) -> list[str]:
    """:func:`stated_labels` over statements already read."""
    found: list[str] = []
    for statement in statements:
        label: str | None = statement.label
        if not statement.affirmed:
            others = [other for other in labels if other != statement.label]
            label = others[0] if len(labels) == 2 else None
        if label is not None and label not in found:
            found.append(label)
    return found


#: a sentence that denies what it lists: "does not raise any concerns about hate, violence,
#: sexual, nudity" argues for "safe" by naming every other label
_LIST_DENIED = re.compile(
    r"\b(whether|if|not|no|never|neither|nor|without|free of|absence of|lack of)\b|n't\b",
    re.IGNORECASE,
)


def side_by_side_labels(text: str, labels: Iterable[str]) -> tuple[str, str] | None:
    """Two different labels next to each other ("sexy, not sexy", "sexy/not sexy", "sexy or
    not sexy"), outside a "whether"/"if" clause and outside a sentence that denies them (a
    "not"/"no"/"without" before the first of the two: a label of its own, "not sexy", does not
    count, it is a label span)."""
    return _side_by_side(text, label_spans(text, labels))


def _side_by_side(text: str, spans: Sequence[tuple[int, int, str]]) -> tuple[str, str] | None:
    """:func:`side_by_side_labels` over spans already found."""
    for (s1, e1, a), (s2, _e2, b) in itertools.pairwise(spans):
        between, sentence = text[e1:s2], text[_sentence_start(text, s1) : s1]
        if a != b and _SIDE_BY_SIDE.match(between) and not _LIST_DENIED.search(sentence):
            return a, b
    return None


def check_states_one_label(stage: str, text: str, labels: Sequence[str], where: str) -> Check:
    """A text must not state two verdict labels: that is a model that has not decided (or is
    looping through the label list), and a training pair that teaches both.

    A text whose only label is its conclusion passes; so does one that states no label.
    """
    spans = label_spans(text, labels)  # found once for both readings below
    pair = _side_by_side(text, spans)
    if pair:
        msg = f"{where} states '{pair[0]}' and '{pair[1]}' side by side; state one verdict"
        return Check("states_one_label", stage, False, msg)
    stated = _affirmed(_statements(text, spans), labels)
    if len(stated) > 1:
        both = " and ".join(f"'{label}'" for label in stated)
        msg = f"{where} states both {both}; state one verdict, once"
        return Check("states_one_label", stage, False, msg)
    return Check("states_one_label", stage, True)


# ----------------------------------------------------------------------------- JSON residue

_SCHEMA_WORDS = (
    "minLength|maxLength|minItems|maxItems|minimum|maximum|additionalProperties|"
    "patternProperties|uniqueItems|anyOf|oneOf|allOf|exclusiveMinimum|exclusiveMaximum"
)
_JSON_RESIDUE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[{}]"), "a brace"),
    (re.compile(r"[\"'`]\s*[\]}]|[\[{]\s*[\"'`]"), "a quote against a bracket"),
    (re.compile(r"[\"']\w+[\"']\s*:"), "a quoted JSON key"),
    (re.compile(r"\b(" + _SCHEMA_WORDS + r")\b|\$(schema|ref|defs)\b"), "a JSON-schema keyword"),
    (
        re.compile(r"\b(properties|required|enum|items|type|const)[\"']?\s*:", re.IGNORECASE),
        "a JSON-schema keyword",
    ),
    (
        re.compile(r"\b(key_elements|proposed_category|audience_cues|multiple_choice|yes_no)\b"),
        "a field name of the output schema",
    ),
)
# ``minimum``/``maximum`` are English words: only their camelCase neighbours are listed above
# as bare words, these two count only when quoted.
_PLAIN_ENGLISH = {"minimum", "maximum"}


#: for each pattern above, strings of which every match it reports holds one: a text with none
#: of them is not scanned for that pattern (prose rarely has braces, colons or underscores, and
#: the critic reads every text of every sample). Every schema keyword reported holds one of the
#: fourth entry (bare ``minimum`` and ``maximum`` never are).
_RESIDUE_HINTS: tuple[tuple[str, ...], ...] = (
    ("{", "}"),
    ("[", "]", "{", "}"),
    (":",),
    ("Length", "Items", "Properties", "Of", "exclusiveM", "$"),
    (":",),
    ("_",),
)


#: any hint of any pattern: one scan that clears most texts (questions, options, answers)
_ANY_HINT = re.compile("|".join(map(re.escape, dict.fromkeys(itertools.chain(*_RESIDUE_HINTS)))))


@functools.lru_cache(maxsize=TEXTS_REMEMBERED)  # a stage check's texts, read again by the critic
def json_residue(text: str) -> str | None:
    """What JSON or schema residue the text contains, quoted, or None."""
    if not _ANY_HINT.search(text):
        return None
    for (pattern, what), hints in zip(_JSON_RESIDUE, _RESIDUE_HINTS, strict=True):
        for hint in hints:
            if hint in text:
                break
        else:
            continue  # no match of this pattern is possible
        for match in pattern.finditer(text):
            found = match.group(0)
            if found.lower() in _PLAIN_ENGLISH:
                continue
            return f"{what} ('{found.strip()}')"
    return None


def schema_texts(models: Iterable[type[BaseModel]]) -> list[str]:
    """The field descriptions of output models' JSON schemas (what a model sees of them),
    for :func:`schema_echo`. Models are passed in: this layer does not know the roles."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            text = node.get("description")
            if isinstance(text, str) and text not in found:
                found.append(text)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for model in models:
        walk(model.model_json_schema())
    return found


_ECHO_WORDS = 6
"""Shortest schema description that counts as copied: "Where the scene takes place" (5
words) may be written in good prose, "The mood or atmosphere the image conveys" is not."""


@functools.lru_cache(maxsize=1024)
def _echo_needle(description: str) -> str | None:
    """A schema description as it is looked for in a text's words (`` w1 w2 ... ``), or None
    when it is too short to count; the same few descriptions come back for every text."""
    wanted = words(description)
    return f" {' '.join(wanted)} " if len(wanted) >= _ECHO_WORDS else None


def schema_echo(text: str, schema: Iterable[str]) -> str | None:
    """The first schema description the text copies word for word, or None."""
    return _schema_echo(text, tuple(schema))


@functools.lru_cache(maxsize=TEXTS_REMEMBERED)  # a stage check's texts, read again by the critic
def _schema_echo(text: str, schema: tuple[str, ...]) -> str | None:
    # Words never contain a space, so a run of words is a substring of the space-joined words.
    haystack = f" {' '.join(words(text))} "
    for description in schema:
        needle = _echo_needle(description)
        if needle is not None and needle in haystack:
            return description
    return None


def check_no_json(stage: str, text: str, where: str, schema: Iterable[str] = ()) -> Check:
    """Prose must not carry JSON syntax or schema keywords, nor copy the output schema's field
    descriptions ("The mood or atmosphere the image conveys."): a model that copies the
    schema into its answer has not answered."""
    residue = json_residue(text)
    if residue:
        msg = f"{where} contains {residue}; write plain sentences, no JSON"
        return Check("no_json_fragments", stage, False, msg)
    echo = schema_echo(text, schema)
    if echo:
        msg = f"{where} copies the output schema's field description '{echo}'; answer it instead"
        return Check("no_json_fragments", stage, False, msg)
    return Check("no_json_fragments", stage, True)


# ----------------------------------------------------------------------------- key elements


def key_element_problem(element: str, description_lemmas: Sequence[str]) -> str | None:
    """Why a key element is not a phrase of the description, or None.

    Word level, lemma matched: every content word of the element must occur in the
    description ("bare shoulders" passes "her shoulders are bare"); a JSON-schema keyword or
    a field name never does.
    """
    residue = json_residue(element)
    if residue:
        return f"'{element}' is {residue.split(' (')[0]}"
    lemmas = content_lemmas(element)
    if not lemmas:
        return f"'{element}' has no words"
    known = set(description_lemmas)
    absent = [w for w, lem in zip(_content_words(element), lemmas, strict=True) if lem not in known]
    if absent:
        return f"'{element}' is not in the description (no '{absent[0]}')"
    return None


def _content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


def check_key_elements(elements: Sequence[str], description: str) -> Check:
    """Key elements must be distinct phrases of the description they summarise."""
    lemmas = content_lemmas(description)
    problems = [p for e in elements if (p := key_element_problem(e, lemmas))]
    times = Counter(" ".join(content_lemmas(e)) or e.strip().lower() for e in elements)
    shown: set[str] = set()
    for element in elements:
        key = " ".join(content_lemmas(element)) or element.strip().lower()
        if times[key] > 1 and key not in shown:
            shown.add(key)
            problems.append(f"'{element}' is listed {times[key]} times")
    msg = (
        "key elements must be short phrases taken from the description: " + "; ".join(problems)
        if problems
        else ""
    )
    return Check("key_elements_in_description", "describer", not problems, msg)


# ----------------------------------------------------------------------------- Q-A answers

_LETTER_OR_DIGIT = re.compile(r"[^\W_]")
_BARE_YES_NO = re.compile(r"^\W*(yes|no)\W*$", re.IGNORECASE)
_DANGLING = frozenset((
    "the", "a", "an", "of", "and", "or", "to", "with", "at", "for", "by", "from", "because",
    "than", "into", "onto",
))  # fmt: skip
#: words a complete sentence may end on ("what she is looking at."): after "what", "that"...
#: and with a full stop the answer is whole; otherwise it broke off ("A towel with")
_STRANDED_PREPOSITIONS = frozenset(("of", "to", "with", "at", "for", "by", "from", "into", "onto"))
_STRANDS = re.compile(r"\b(what|which|who|whom|where|that)\b", re.IGNORECASE)
_ENDS_SENTENCE = re.compile(r"[.!?][\"'’”)\]]*\s*$")
_OPEN_WORD = re.compile(r"\b(what|how|which|where|who|whom|whose|why|when|describe)\b", re.I)
_YES_NO_FORM = re.compile(
    r"^\W*(is|are|was|were|does|do|did|can|could|has|have|had|will|would|should|may|might)\b",
    re.IGNORECASE,
)


def text_problem(text: str) -> str | None:
    """Why a question, option or answer is not a usable text: empty, only punctuation, or
    carrying JSON residue (``No'}], ``)."""
    if not _LETTER_OR_DIGIT.search(text):
        return "is empty or only punctuation"
    residue = json_residue(text)
    return f"contains {residue}" if residue else None


def is_open_question(question: str) -> bool:
    """Asks what, how, which... and is not phrased as a yes/no question ("Is it what ...")."""
    return bool(_OPEN_WORD.search(question)) and not _YES_NO_FORM.match(question)


def fragment_problem(answer: str) -> str | None:
    """Why the answer to an open question is a fragment: it breaks off on a word that must be
    followed by more ("It shows the", "A woman with"). A preposition that a clause with
    "what", "which", "that"... strands, followed by a full stop, is no break ("It makes one
    wonder what she is looking at.")."""
    tokens = words(answer)
    if len(tokens) > 1 and tokens[-1] in _DANGLING:
        stranded = tokens[-1] in _STRANDED_PREPOSITIONS and _ENDS_SENTENCE.search(answer)
        if stranded and _STRANDS.search(answer):  # "what she is looking at."
            return None
        return f"breaks off after '{tokens[-1]}'"
    return None


def _items(qa: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for kind in ("yes_no", "multiple_choice", "what", "how"):
        for item in qa.get(kind) or []:
            yield kind, item


_LETTER_ONLY = re.compile(r"^\W*[A-Da-d]\W*$")


def qa_problems(qa: Mapping[str, Any], answer_limit: int | None = None) -> list[str]:
    """Unusable texts in a Q-A set in the pipeline's shape (``yes_no``, ``multiple_choice``,
    ``what``, ``how`` lists of items with ``question`` and ``answer``/``options``): empty,
    punctuation or JSON residue anywhere; a question without '?'; an option that is only a
    letter (qwen wrote the options "A", "B", "C", "D"); an open answer that breaks off, on a
    dangling word or, without a sentence end, at ``answer_limit`` (where decoding cut it)."""
    problems = []
    for kind, item in _items(qa):
        question = str(item.get("question", ""))
        why = text_problem(question)
        # a question may end inside its closing quote: "... question 'Is it sexy?'" or "'... ? '"
        if why is None and not question.rstrip().rstrip("'\"’”)").rstrip().endswith("?"):
            why = "is not a question (no '?')"
        if why:
            problems.append(f"the question '{question}' {why}")
        for option in (str(o) for o in item.get("options") or []):
            why = text_problem(option) or (
                "is only a letter, not an answer" if _LETTER_ONLY.match(option) else None
            )
            if why:
                problems.append(f"an option of '{question}' ('{option}') {why}")
        if kind in ("what", "how"):
            answer = str(item.get("answer", ""))
            why = text_problem(answer) or (
                fragment_problem(answer) if is_open_question(question) else None
            )
            if why is None and _cut_at(answer, answer_limit):
                why = "breaks off at the length limit"
            if why:
                problems.append(f"the {kind} answer '{answer}' to '{question}' {why}")
    return problems


def check_qa_well_formed(qa: Mapping[str, Any], answer_limit: int | None = None) -> Check:
    """Every question, option and open answer must be a complete, plain text."""
    problems = qa_problems(qa, answer_limit)
    return Check("qa_well_formed", "qa_writer", not problems, "; ".join(problems))


def kind_problems(qa: Mapping[str, Any]) -> list[str]:
    """What and How items that are yes/no items in disguise: a yes/no question ("Is the image
    sexy?" as a What item), or an open question answered with a bare yes or no."""
    problems = []
    for kind, item in _items(qa):
        if kind not in ("what", "how"):
            continue
        question, answer = str(item.get("question", "")), str(item.get("answer", ""))
        if _YES_NO_FORM.match(question) and not _OPEN_WORD.search(question):
            problems.append(f"the {kind} item '{question}' asks a yes/no question")
        elif is_open_question(question) and _BARE_YES_NO.match(answer):
            problems.append(f"the {kind} question '{question}' is answered '{answer.strip()}'")
    return problems


def check_qa_fits_kind(qa: Mapping[str, Any]) -> Check:
    """What/How items must ask and answer open questions: MQA scores yes/no items by the
    answer's first character, and a yes/no pair filed as What teaches nothing open."""
    problems = kind_problems(qa)
    return Check("qa_fits_item_kind", "qa_writer", not problems, "; ".join(problems))


# ----------------------------------------------------------------------------- attributes


def attribute_mentions(policy: Policy, category: str) -> dict[str, list[str]]:
    """``attribute=value`` -> the phrases that count as mentioning it, for each attribute the
    category fixes (from the policy's synonyms; see ``Attribute.mentions``)."""
    fixed = policy.categories[category].attributes
    return {f"{a}={v}": policy.attributes[a].mentions(v) for a, v in fixed.items()}


def missing_attributes(text: str, mentions: Mapping[str, Sequence[str]]) -> list[str]:
    """The ``attribute=value`` keys none of whose phrases the text contains (lemma matched,
    stopwords ignored: "a woman biting her lip" contains "bite lip" and "women")."""
    lemmas = content_lemmas(text)
    every = [lemma(w) for w in words(text)]
    return [
        key
        for key, phrases in mentions.items()
        if phrases and not any(_mentions(lemmas, every, phrase) for phrase in phrases)
    ]


_SLACK = 2
"""Other content words allowed inside a matched phrase: "lift skirt" matches "lifting up the
hem of her skirt" (up, hem)."""


def _mentions(lemmas: Sequence[str], every: Sequence[str], phrase: str) -> bool:
    """A phrase of content words is matched with stopwords ignored on both sides; a phrase
    made only of stopwords ("she") is matched word for word."""
    content = content_lemmas(phrase)
    if content:
        return contains_phrase(lemmas, content, slack=_SLACK)
    return contains_phrase(every, [lemma(w) for w in words(phrase)])


def check_attributes_mentioned(
    text: str, mentions: Mapping[str, Sequence[str]], stage: str = "describer"
) -> Check:
    """Each annotated attribute value must be mentioned by one of its phrases."""
    missing = missing_attributes(text, mentions)
    parts = []
    for key in missing:
        shown = ", ".join(mentions[key][:6])
        parts.append(f"{key} (e.g. {shown})")
    msg = "the text never mentions the annotated " + "; ".join(parts) if missing else ""
    return Check("attributes_mentioned", stage, not missing, msg)


# ----------------------------------------------------------------------------- a whole sample


_SENTENCE_END = re.compile(r"[.!?…][\"'’”)\]]*\s*$")


def _reaches(text: str, limit: int | None) -> bool:
    """Whether ``text`` reached the length bound decoding enforced (where a grammar cuts it)."""
    return limit is not None and len(text.strip()) >= limit - 3


def _cut_at(text: str, limit: int | None) -> bool:
    """Cut by its length bound: it reached the bound with no sentence end."""
    return _reaches(text, limit) and not _SENTENCE_END.search(text)


#: a sentence end inside a text: the end mark, closing quotes or brackets, then a space
_INNER_SENTENCE_END = re.compile(r"[.!?…][\"'’”)\]]*(?=\s)")


def trim_cut_text(text: str, limit: int | None, min_sentences: int = 2) -> str | None:
    """``text`` without the sentence its length bound cut off, or None when it was not cut or
    too little would be left.

    A grammar-bounded field ends where the bound is, often mid-sentence ("... that images of
    this kind (e"); when at least ``min_sentences`` whole sentences come before the cut, those
    are the answer. The model's full text stays in the call's trace."""
    if not _cut_at(text, limit):
        return None
    ends = [m.end() for m in _INNER_SENTENCE_END.finditer(text)]
    if len(ends) < min_sentences:
        return None
    return text[: ends[-1]].strip()


def check_complete_text(stage: str, text: str, where: str, limit: int | None = None) -> Check:
    """A prose field must not break off: a text cut by its length bound ("... and the image does
    not") is a fragment, whatever is appended to it later (the code-written conclusion).

    Broken off = no sentence end, and either it reached ``limit`` (the bound decoding enforced:
    that is where a grammar cuts it) or its last word needs more after it ("with", "the").
    Released, human-checked texts sometimes just lack the final period; that alone passes."""
    tokens = words(text)
    dangling = len(tokens) > 1 and tokens[-1] in _DANGLING
    if not text.strip() or _SENTENCE_END.search(text) or not (_reaches(text, limit) or dangling):
        return Check("complete_text", stage, True)
    tail = " ".join(text.split()[-6:])
    return Check(
        "complete_text",
        stage,
        False,
        f"{where} breaks off mid-sentence ('... {_clip(tail, 60)}'): write complete sentences "
        "and finish within the length limit",
    )


def garbage_checks(
    policy: Policy,
    state: Mapping[str, Any],
    schema: Sequence[str] = (),
    explanation_limit: int | None = None,
    answer_limit: int | None = None,
    want: Callable[[str], bool] | None = None,
) -> list[Check]:
    """Every check above over a pipeline state (the critic's input): the description and key
    elements (unless the description was given), the context, each rule's explanation, the
    Q-A set. ``schema``: the output schemas' field descriptions (:func:`schema_texts`), which
    a prose field must not copy; ``*_limit``: the length bounds decoding enforced; ``want``
    (a stage name -> whether its checks are wanted; None: every stage's): only those."""

    checks: list[Check] = []
    sample = state.get("sample")
    given = sample is not None and getattr(sample, "given_description", None) is not None
    description = state.get("description") or ""
    category = state.get("category")
    if description and not given and wanted(want, "describer"):
        checks.append(check_no_looping("describer", description, "the description"))
        checks.append(check_no_json("describer", description, "the description", schema))
        if state.get("key_elements"):
            checks.append(check_key_elements(state["key_elements"], description))
        if category:
            checks.append(
                check_attributes_mentioned(description, attribute_mentions(policy, category))
            )
    context = state.get("context")
    if context and wanted(want, "context_interpreter"):
        checks.append(check_no_looping("context_interpreter", context, "the context"))
        checks.append(check_no_json("context_interpreter", context, "the context", schema))
    labels = list(policy.verdicts)
    explanations = (state.get("explanations") or {}) if wanted(want, "explainer") else {}
    for rule, item in explanations.items():
        text = item["explanation"]
        where = f"under {rule} the explanation"
        checks.append(check_no_looping("explainer", text, where))
        checks.append(check_no_json("explainer", text, where, schema))
        checks.append(check_states_one_label("explainer", text, labels, where))
        argument = item.get("argument") or text
        checks.append(check_complete_text("explainer", argument, where, explanation_limit))
    qa = state.get("qa")
    if qa and wanted(want, "qa_writer"):
        checks.append(check_qa_well_formed(qa, answer_limit))
        checks.append(check_qa_fits_kind(qa))
    return checks


def with_garbage_checks(
    policy: Policy,
    state: Mapping[str, Any],
    checks: Sequence[Check],
    schema: Sequence[str] = (),
    explanation_limit: int | None = None,
    answer_limit: int | None = None,
    want: Callable[[str], bool] | None = None,
) -> list[Check]:
    """The critic's deterministic checks plus :func:`garbage_checks` (of the stages ``want``
    keeps). A check here replaces one of the same name and stage there:
    ``attributes_mentioned`` reads the policy's synonyms and lemmas instead of words cut from
    the value's description."""
    extra = garbage_checks(policy, state, schema, explanation_limit, answer_limit, want)
    replaced = {(c.name, c.stage) for c in extra}
    return [c for c in checks if (c.name, c.stage) not in replaced] + extra


# ----------------------------------------------------------------------------- released data


def released_qa(
    qa: Iterable[tuple[str, str, str]], mc: Iterable[tuple[str, Sequence[str], str]]
) -> dict[str, list[dict[str, Any]]]:
    """Released ICM-Instruct Q-A (``(type, question, answer)``; ``type`` is ``Yes/No``,
    ``What`` or ``How``) and multiple choice (``(question, choices, answer)``) in the
    pipeline's Q-A shape, for :func:`check_qa_well_formed`."""
    out: dict[str, list[dict[str, Any]]] = {"yes_no": [], "multiple_choice": [], "what": [],
                                            "how": []}  # fmt: skip
    for kind, question, answer in qa:
        key = kind.lower().replace(" ", "").replace("/", "_").replace("yesno", "yes_no")
        out.setdefault(key if key in out else "what", []).append(
            {"question": question, "answer": answer}
        )
    for question, choices, answer in mc:
        out["multiple_choice"].append({"question": question, "options": list(choices),
                                       "answer": answer})  # fmt: skip
    return out


def released_record_checks(
    policy: Policy,
    *,
    category: str | None,
    explanation: str,
    qa: Iterable[tuple[str, str, str]],
    mc: Iterable[tuple[str, Sequence[str], str]],
) -> list[Check]:
    """The checks that apply to a released record: the explanation's (looping, JSON, two
    labels), the Q-A set's, and ``attributes_mentioned`` over the explanation (the released
    data has no separate description, so this one measures the synonym lists, not a defect)."""
    where = "the explanation"
    checks = [
        check_no_looping("explainer", explanation, where),
        check_no_json("explainer", explanation, where),
        check_states_one_label("explainer", explanation, list(policy.verdicts), where),
    ]
    pairs = released_qa(qa, mc)
    checks += [check_qa_well_formed(pairs), check_qa_fits_kind(pairs)]
    if category in policy.categories:
        mentions = attribute_mentions(policy, category)
        checks.append(check_attributes_mentioned(explanation, mentions, "explainer"))
    return checks
