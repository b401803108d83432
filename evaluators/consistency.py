"""Deterministic consistency checks: the critic runs them before any LLM critique, and the
dataset audit runs them over existing ICM-Instruct files.

Each check is a pure function over plain values and returns :class:`Check` results that say
which stage must be redone and why, in words that can be fed back to that stage's model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from evaluators.hinted_search import hinted_search

REFUSAL_PATTERNS = re.compile(
    r"\b(I('m| am) sorry,? but|I can(no|')t (help|assist|comply|provide|describe)|"
    r"I('m| am) (not able|unable) to (help|assist|describe|comply)|as an AI( language model)?|"
    r"I won't (help|describe|provide)|cannot assist with)",
    re.IGNORECASE,
)
_NEGATION = re.compile(r"\b(not|no|never|non|without|free of|appropriate|safe)\b|n't\b", re.I)


#: a question asking whether the image is flagged, the word every policy's verdicts use
_FLAGGED = re.compile(
    r"^\s*(is|was|would|will|should|does|do|could|can)\b[^?]*\bflagged\b", re.IGNORECASE
)


@dataclass(frozen=True)
class Check:
    """One check's outcome. ``stage`` is the stage whose output must change to pass it."""

    name: str
    stage: str
    passed: bool
    message: str = ""


def wanted(want: Callable[[str], bool] | None, stage: str) -> bool:
    """Whether ``want`` (a stage name -> whether its checks are wanted; None: every stage's,
    as the critic wants them) keeps the checks about ``stage``."""
    return want is None or want(stage)


def term_pattern(term: str) -> re.Pattern[str]:
    """A loose pattern for questions about the policy's term: ``sexy`` also finds ``sexual``."""
    stems = []
    for word in re.findall(r"[a-zA-Z]+", term):
        stem = word[: max(3, len(word) - 3)]
        stems.append(re.escape(stem.lower()) + r"\w*")
    return re.compile(r"\b(" + "|".join(stems) + r")", re.IGNORECASE)


def check_verdict_matches_rule(rule: str, verdict: str | None, expected: str) -> Check:
    """The explainer's verdict must equal the rule table's verdict for the category."""
    ok = verdict == expected
    msg = "" if ok else f"under {rule} the verdict must be '{expected}', not '{verdict}'"
    return Check("verdict_matches_rule", "explainer", ok, msg)


def last_label_in(text: str, labels: Iterable[str]) -> str | None:
    """The verdict label a text ends on, or None when it names none.

    Labels can contain each other (``sexy`` inside ``not sexy``): an occurrence that lies inside
    an occurrence of a longer label does not count.
    """
    lowered = text.lower()
    spans: list[tuple[int, int, str]] = []
    for label in set(labels):
        for match in re.finditer(r"\b" + re.escape(label.lower()) + r"\b", lowered):
            spans.append((match.start(), match.end(), label))
    kept = [
        (start, end, label)
        for start, end, label in spans
        if not any(s <= start and end <= e and (s, e) != (start, end) for s, e, _ in spans)
    ]
    return max(kept, key=lambda span: span[1])[2] if kept else None


def check_explanation_states_verdict(
    rule: str, explanation: str, verdict: str, other_labels: Iterable[str]
) -> Check:
    """The explanation must state its verdict, and the last label it names must be that one."""
    last = last_label_in(explanation, {verdict, *other_labels})
    if last is None:
        msg = f"the explanation under {rule} never states its verdict '{verdict}'"
        return Check("explanation_states_verdict", "explainer", False, msg)
    ok = last == verdict
    msg = (
        ""
        if ok
        else f"the explanation under {rule} ends on '{last}' but the verdict is '{verdict}'"
    )
    return Check("explanation_states_verdict", "explainer", ok, msg)


def check_yes_no_agreement(
    items: Sequence[tuple[str, str]], term: str, flagged: bool, rule: str | None = None
) -> list[Check]:
    """Yes/no questions about the policy's term must be answered as the verdict says.

    ``items`` are (question, answer) pairs; answers are read from their first character
    (``Yes.`` / ``No``), as the paper scores them. Negated questions are skipped: the check
    only flags clear contradictions.
    """
    pattern = term_pattern(term)
    expected = "Yes" if flagged else "No"
    checks = []
    for question, answer in items:
        # "Is the image flagged for children under 13 according to rule R1?" asks for the
        # verdict in the policy's own word: the demo accepted "Yes." to it under "safe"
        asks = pattern.search(question) or _FLAGGED.search(question)
        if not asks or _NEGATION.search(question):
            continue
        given = "Yes" if answer.strip().lower().startswith("y") else "No"
        ok = given == expected
        where = f" under {rule}" if rule else ""
        msg = "" if ok else (f"'{question}' is answered '{answer}' but the verdict{where} means "
                             f"'{expected}'")  # fmt: skip
        checks.append(Check("yes_no_agrees_with_verdict", "qa_writer", ok, msg))
    return checks


def check_multiple_choice(question: str, options: Sequence[str], answer: str) -> Check:
    """Four distinct, non-empty options, and the answer is one of their letters."""
    letters = "ABCD"
    # compared by their words: "A pink background with the words 'FEELING SEXY'" and "a pink
    # background with the words FEELING SEXY" are one option (the demo's meme had four such)
    cleaned = [
        " ".join(re.findall(r"[^\W_]+", re.sub(r"^\s*[A-D][.)]\s*", "", o).lower()))
        for o in options
    ]
    problems = []
    if len(options) != 4:
        problems.append(f"has {len(options)} options instead of 4")
    if any(not c for c in cleaned):
        problems.append("has an empty option")
    if len(set(cleaned)) != len(cleaned):
        problems.append("repeats an option")
    letter = answer.strip()[:1].upper()
    if letter not in letters[: len(options)]:
        problems.append(f"answer '{answer}' is not one of its option letters")
    msg = f"multiple-choice '{question}' " + "; ".join(problems) if problems else ""
    return Check("multiple_choice_valid", "qa_writer", not problems, msg)


def check_attributes_mentioned(
    text: str, attribute_words: dict[str, Sequence[str]], stage: str = "describer"
) -> Check:
    """Each annotated attribute must be mentioned by at least one of its words.

    ``attribute_words`` maps ``attribute=value`` to words that count as a mention (the value's
    name split on ``_`` and short synonyms from the policy's value description).
    """
    lowered = text.lower()
    missing = [
        key
        for key, words in attribute_words.items()
        if words and not any(re.search(r"\b" + re.escape(w.lower()), lowered) for w in words)
    ]
    msg = ("the text never mentions the annotated " + ", ".join(missing)) if missing else ""
    return Check("attributes_mentioned", stage, not missing, msg)


#: words every match of :data:`REFUSAL_PATTERNS` holds one of (lower case)
REFUSAL_HINTS = ("i'm", "i am", "i can", "as an ai", "i won't", "cannot assist")


def check_no_refusal(stage: str, text: str) -> Check:
    """A refusal phrased as an answer is not data."""
    match = hinted_search(REFUSAL_PATTERNS, REFUSAL_HINTS, text)
    msg = f"the output contains refusal text ('{match.group(0)}')" if match else ""
    return Check("no_refusal", stage, match is None, msg)


def check_length(stage: str, text: str, min_words: int, max_words: int) -> Check:
    words = len(text.split())
    ok = min_words <= words <= max_words
    msg = "" if ok else f"has {words} words; expected {min_words}-{max_words}"
    return Check("length_bounds", stage, ok, msg)


# ----------------------------------------------------------------------------- free prose
# The checks below read text written without our templates (e.g. the released ICM-Instruct
# data), where a verdict is phrased ("is not considered sexy", "a non-sexy atmosphere") rather
# than stated as a label. They are deliberately conservative: a finding should be a defect a
# reader agrees with, so anything ambiguous counts as no finding.

_YES_NO_ANSWER = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_CLAUSE_BREAK = re.compile(r"[,;:()]|\b(but|while|whereas|although|though|however|yet)\b", re.I)
_CLAUSE_NEGATION = re.compile(
    r"\b(not|no|nothing|none|never|nor|neither|without|lacks?|lacking|rather than|instead of|"
    r"free of|far from|devoid of|absence of|incompatible|inappropriate)\b|n't\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def yes_no_answer(answer: str) -> bool | None:
    """True for an answer that begins with yes, False for no, None for anything else."""
    match = _YES_NO_ANSWER.match(answer)
    return None if match is None else match.group(1).lower() == "yes"


#: the term said of something ("is sexy", "is not particularly sexy", "can be considered
#: 'sexy'", "appear sexy"): a verb of being or seeming, then only adverbs, "as" or "to be"
_PREDICATE = re.compile(
    r"\b(is|are|was|were|be|being|been|appears?|looks?|seems?|remains?|becomes?|feels?|"
    r"makes? (?:it|the (?:image|picture|photo)))\s+"
    r"((not|n't|\w+ly|very|quite|so|too|more|less|at all|any|as|to be|considered|deemed|"
    r"perceived|regarded|viewed|seen|classified|labell?ed|described|rated|thought of as|"
    r"appear|look|seem)\s+)*[\"'“‘]?$",
    re.IGNORECASE,
)
#: a mention that states no verdict on this image: what someone may find, what varies, what
#: would be needed, a comparison
_NOT_A_VERDICT = re.compile(
    r"\b(if|whether|what|might|could|would|may|vary|varies|subjective|perceptions?|"
    r"some|someone|those|one would|typically|often|usually|generally|than|likely|unlikely|"
    r"chances?)\b",
    re.IGNORECASE,
)

_BARE_DENIAL = re.compile(r"^\W*not\W*$", re.IGNORECASE)


def term_stance(text: str, term: str) -> tuple[bool, str] | None:
    """Whether a text's last statement about ``term`` affirms or denies it, with that sentence.

    :func:`last_label_in` reads labels verbatim, so prose such as "it is not considered sexy"
    ends on ``sexy`` there. Here only a verdict counts: the term said of something ("the image
    is not particularly sexy", "can be considered sexy") or ``non-sexy`` / ``unsexy``
    (denials wherever they stand). The term used of a noun ("does not detract from the sexy
    atmosphere", "the absence of clothing contributes to the sexy atmosphere") presupposes
    rather than states, and a hedged or comparing sentence ("perceptions of what is 'sexy'
    can vary", "less likely to be perceived as sexy") states no verdict on this image: neither
    is read. A verdict is denied when a negation precedes it within its clause (the text since
    the last comma, semicolon or contrast word). Words derived from the term (``sexual``) are
    not read. None: the text states no verdict with the term.
    """
    mention = re.compile(r"\b(non-|un)?" + re.escape(term.lower()) + r"\b", re.IGNORECASE)
    last: tuple[bool, str] | None = None
    for sentence in _SENTENCE_END.split(text.strip()):
        for match in mention.finditer(sentence):
            before = sentence[: match.start()]
            breaks = [b.end() for b in _CLAUSE_BREAK.finditer(before)]
            clause = before[breaks[-1] :] if breaks else before
            if match.group(1):  # non-sexy, unsexy
                last = (False, sentence.strip())
                continue
            if _BARE_DENIAL.match(clause):  # "..., not sexy": the other label, stated bare
                last = (False, sentence.strip())
                continue
            if not _PREDICATE.search(clause) or _NOT_A_VERDICT.search(sentence):
                continue
            denied = bool(_CLAUSE_NEGATION.search(clause))
            last = (not denied, sentence.strip())
    return last


def check_explanation_stance(explanation: str, term: str, flagged: bool) -> Check:
    """The explanation's last statement about the term must agree with its label."""
    stance = term_stance(explanation, term)
    if stance is None or stance[0] == flagged:
        return Check("explanation_stance", "explainer", True)
    said = "affirms" if stance[0] else "denies"
    msg = f"the explanation's last statement about '{term}' {said} it: '{stance[1]}'"
    return Check("explanation_stance", "explainer", False, msg)


@dataclass(frozen=True)
class PeopleGroup:
    """Words that name a kind of person in a Q-A, and words by which an explanation shows it
    has that kind of person in view (pronouns included: "she" is a woman)."""

    name: str
    named_by: re.Pattern[str]
    evidence: re.Pattern[str]


def _words(*alternatives: str) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(alternatives) + r")\b", re.IGNORECASE)


_FEMALE = ("wom[ae]n", "lady", "ladies", "females?", "girls?")
_MALE = ("m[ae]n", "males?", "boys?", "guys?", "gentlem[ae]n")
_CHILD = ("child(ren)?", "kids?", "bab(y|ies)", "toddlers?", "infants?", "minors?")
_PLURAL = ("people", "persons", "individuals", "wom[ae]n", "m[ae]n", "girls", "boys", "kids",
           "children", "friends", "couples?", "pair", "both", "group", "crowd", "each other",
           "two", "three", "four", "five", "several", "multiple", "many")  # fmt: skip
_SHE = ("she", "her", "hers", "herself", "mother", "wife", "bride", "actress", "daughter",
        "sister", "feminine")  # fmt: skip
_HE = ("he", "him", "his", "himself", "father", "husband", "groom", "actor", "son", "brother",
       "masculine")  # fmt: skip
_YOUNG = ("girls?", "boys?", "young", "little", "teens?", "teenagers?", "daughter", "son",
          "school\\w*")  # fmt: skip
_COUNTED = (
    r"(two|three|four|five|several|multiple|a group of|a crowd of) "
    r"(people|persons|individuals|wom[ae]n|m[ae]n|girls|boys|children|friends)"
)
PEOPLE_GROUPS: tuple[PeopleGroup, ...] = (
    PeopleGroup("woman", _words(*_FEMALE), _words(*_FEMALE, *_SHE)),
    PeopleGroup("man", _words(*_MALE), _words(*_MALE, *_HE)),
    PeopleGroup("child", _words(*_CHILD), _words(*_CHILD, *_YOUNG)),
    PeopleGroup("couple", _words("couples?"), _words(*_PLURAL, "partners?", "lovers")),
    PeopleGroup("several people", _words(_COUNTED), _words(*_PLURAL)),
)
"""Kinds of person a Q-A can name. A bare "person" is not a kind: it is what explanations say
when they avoid gender, so it supports nothing and contradicts nothing."""


def people_named(question: str, answer: str) -> set[str]:
    """The kinds of person a question-answer pair asserts are in the image.

    A yes/no question answered "no" asserts nothing ("Is the person male? No."). A question that
    offers alternatives ("male or female?") asserts only what its answer picks.
    """
    if yes_no_answer(answer) is False:
        return set()
    texts = [answer] if re.search(r"\bor\b", question, re.IGNORECASE) else [question, answer]
    return {g.name for g in PEOPLE_GROUPS for text in texts if g.named_by.search(text)}


def people_missing(question: str, answer: str, explanation: str) -> list[str]:
    """Kinds of person the Q-A asserts and the explanation never shows, sorted."""
    named = people_named(question, answer)
    return sorted(
        g.name for g in PEOPLE_GROUPS if g.name in named and not g.evidence.search(explanation)
    )


def check_people_in_explanation(question: str, answer: str, explanation: str) -> Check:
    """Q-A must not bring in people the explanation never shows (a woman where it only ever
    says "a person ... their"): Q-A are written from the explanation, so such a person is
    either invented or seen by another model, and the training pair teaches it either way."""
    missing = people_missing(question, answer, explanation)
    msg = (
        f"'{question}' / '{answer}' names {' and '.join(missing)}, which the explanation "
        "never mentions"
        if missing
        else ""
    )
    return Check("people_in_explanation", "qa_writer", not missing, msg)
