"""Checks that read a record as a whole: Q-A that contradict the record they belong to, texts
that talk about the pipeline instead of the image, and arguments that do not rest on the rule.

The per-text checks (:mod:`evaluators.text_checks`) read each text alone, so a record could
pass with a multiple-choice answer "B. The image is not safe" under a "safe" verdict, a
question about its own question set ("What are the four distinct answer options for the
multiple-choice question?"), a description that copies the critic's feedback ("The reviewer's
rejection was based on..."), or an argument for a board game that it is "not suitable for
individuals who are not interested in board games". All of these are decidable without a
model; each check here names what to change, in words fed back to the stage that wrote it.

``benchmarks/bench_record_checks_released.py`` measures how often the Q-A checks reject the
released ICM-Instruct records (mostly good text): they are tuned to reject none of them.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from data.policy_models import Policy
from evaluators.consistency import Check, term_stance, wanted
from evaluators.hinted_search import hinted_search
from evaluators.lemmas import TEXTS_REMEMBERED, content_lemmas, words
from evaluators.text_checks import label_statements

_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")

# ----------------------------------------------------------------------------- answers vs verdict


def answer_contradiction(answer: str, verdict: str, policy: Policy) -> str | None:
    """How ``answer`` contradicts the record's ``verdict``, or None: it states of the image
    ("the image is ...", :func:`evaluators.text_checks.label_statements`) another label of the
    policy, or denies the verdict's own label, or says the image is or is not the policy's
    term against the verdict ("The image is unsafe" under "safe").

    Only statements about the image count: a bare option ("Sexy" for "What is the overall
    atmosphere?") or a clause with the term ("adds to the sexy atmosphere") is not decided
    here; the released records have both, and reading them misjudged one of the three."""
    for statement in label_statements(answer, list(policy.verdicts)):
        if statement.label == verdict and not statement.affirmed:
            return f"denies the verdict '{verdict}'"
        if statement.label != verdict and statement.affirmed:
            return f"states '{statement.label}' where the verdict is '{verdict}'"
    if _IMAGE_IS.search(answer):
        stance = term_stance(answer, policy.term)
        if stance is not None and stance[0] != policy.is_flagged(verdict):
            said = "affirms" if stance[0] else "denies"
            return f"{said} '{policy.term}' where the verdict is '{verdict}'"
    return None


_IMAGE_IS = re.compile(
    r"\b(the|this)\s+(image|picture|photo|photograph|content)\s+(is|was|seems|appears)\b",
    re.IGNORECASE,
)


def _option_text(options: Sequence[str], answer: str) -> str | None:
    letter = answer.strip()[:1].upper()
    index = "ABCD".find(letter)
    if index < 0 or index >= len(options):
        return None
    return re.sub(r"^\s*[A-D][.)]\s*", "", str(options[index])).strip()


def qa_verdict_problems(qa: Mapping[str, Any], verdict: str, policy: Policy) -> list[str]:
    """Multiple-choice answers (the correct option's text) and open answers that contradict
    the verdict (yes/no items are :func:`evaluators.consistency.check_yes_no_agreement`'s)."""
    problems = []
    for item in qa.get("multiple_choice") or []:
        chosen = _option_text(item.get("options") or [], str(item.get("answer", "")))
        why = answer_contradiction(chosen, verdict, policy) if chosen else None
        if why:
            problems.append(f"the multiple-choice answer '{chosen}' to '{item['question']}' {why}")
    for kind in ("what", "how"):
        for item in qa.get(kind) or []:
            why = answer_contradiction(str(item.get("answer", "")), verdict, policy)
            if why:
                problems.append(f"the {kind} answer '{item['answer']}' {why}")
    return problems


# ----------------------------------------------------------------------------- answers vs record


def _option_lemmas(option: str) -> set[str]:
    return set(content_lemmas(re.sub(r"^\s*[A-D][.)]\s*", "", option)))


#: questions that ask which kind of thing is shown: their options name things, and a record
#: that names one of them decides the answer (a mood or an expression is read, not named, and
#: the released records answer those in words their explanations do not use)
_ASKS_KIND = re.compile(
    r"\b(type|kind|sort)\s+of\b|\bwhich\s+(object|game|item|animal|thing|product)\b",
    re.IGNORECASE,
)


def mc_record_problems(qa: Mapping[str, Any], record_text: str) -> list[str]:
    """Multiple-choice items whose correct option the record never supports while it supports
    another option word for word: "type of game?" answered "Card game" in a record about a
    board game with dice. Decided only where it is clear, option against option: none of the
    words by which the answer differs from another option is in the record, and all of the
    words by which that option differs from the answer are."""
    record = set(content_lemmas(record_text))
    problems = []
    for item in qa.get("multiple_choice") or []:
        question = str(item.get("question", ""))
        if not _ASKS_KIND.search(question) or re.search(r"\b(not|never)\b|n't", question, re.I):
            continue
        options = [str(o) for o in item.get("options") or []]
        letter = str(item.get("answer", "")).strip()[:1].upper()
        index = "ABCD".find(letter)
        if len(options) < 2 or not 0 <= index < len(options):
            continue
        if re.search(r"\b(none|all) of the above\b", options[index], re.IGNORECASE):
            continue
        chosen = _option_lemmas(options[index])
        # compared pairwise: "Card game" against "Board game" is "card" against "board"
        backed = []
        for n, option in enumerate(options):
            other = _option_lemmas(option)
            mine, theirs = chosen - other, other - chosen
            if n != index and mine and theirs and theirs <= record and not mine & record:
                backed.append(option)
        if backed:
            problems.append(
                f"the multiple-choice answer '{options[index]}' to '{item['question']}' is not "
                f"in the record, which says '{backed[0]}' instead"
            )
    return problems


# ----------------------------------------------------------------------------- about the Q-A set

#: "Which of the following options best describes the image?" is an ordinary stem: only the
#: options as a set of answers ("the four options", "answer options") is about the questions
_ABOUT_QUESTIONS = re.compile(
    r"\b(multiple[- ]choice|answer options?|(four|4|distinct) options|"
    r"(the|this|that|a|each) (yes/no |yes-or-no |'what' |'how' |\"what\" |\"how\" |what |how )?"
    r"questions?\b|questions? (set|above|below))",
    re.IGNORECASE,
)


def question_set_problems(qa: Mapping[str, Any]) -> list[str]:
    """Questions about the question set itself ("What is the answer to the 'what' question?")
    teach nothing about the image."""
    problems = []
    for kind in ("yes_no", "multiple_choice", "what", "how"):
        for item in qa.get(kind) or []:
            question = str(item.get("question", ""))
            if _ABOUT_QUESTIONS.search(question):
                problems.append(f"the {kind} question '{question}' asks about the questions")
    return problems


_NUMBER = re.compile(r"\d+")
_COUNTS = re.compile(r"\bhow\s+many\b", re.IGNORECASE)


def unsupported_number_problems(qa: Mapping[str, Any], record_text: str) -> list[str]:
    """What/How answers that state a number neither the record nor the question states: "How
    much is the ticket worth?" -> "The ticket is worth $200." where no price is anywhere (the
    demo's redo, Dec 8), "black 32%" where the description says 42 %. A count ("How many ...?"
    -> "3") is read off the record, not copied from it, and is not judged."""
    stated = set(_NUMBER.findall(record_text))
    problems = []
    for kind in ("what", "how"):
        for item in qa.get(kind) or []:
            question = str(item.get("question", ""))
            if _COUNTS.search(question):
                continue
            answer = str(item.get("answer", ""))
            given = stated.union(_NUMBER.findall(question))
            new = [n for n in dict.fromkeys(_NUMBER.findall(answer)) if n not in given]
            if new:
                problems.append(
                    f"the {kind} answer '{answer}' to '{question}' states {', '.join(new)}, "
                    "which the description and the explanation never state"
                )
    return problems


#: what a yes/no question may add around a run it copies from the description and still ask
#: only whether the image is what the description says ("Is the image of ...?", "Does this
#: photo show ...?")
_ONLY_ASKS_THE_IMAGE = frozenset({"is", "does", "do", "the", "this", "image", "picture", "photo",
                                  "of", "a", "an", "show", "shows", "showing", "depict",
                                  "depicts", "depicting"})  # fmt: skip
_NEGATING = frozenset({"not", "no", "never", "without", "nor", "neither", "none", "nothing"})


def restated_description_problems(
    qa: Mapping[str, Any], description: str, span: int = 8
) -> list[str]:
    """Yes/no items that ask whether the image is what its description says and answer No:
    the description is what the image shows, so the answer is Yes (the demo accepted "Is the
    image of Grace Hopper, head and upper body, fully clothed in US Navy uniform and cap, ...?"
    -> No). Decided only where nothing else is asked: the question copies a run of ``span`` or
    more of the description's words in order, with no negating word among them or among the
    three before them in the description ("does not contain any explicit or suggestive
    content" -> "Does the image contain any ...?" No is right), and its other words are only
    "is the image of" and the like."""
    described = words(description)
    if len(described) < span:
        return []
    problems = []
    for item in qa.get("yes_no") or []:
        if not str(item.get("answer", "")).strip().lower().startswith("no"):
            continue
        question = str(item.get("question", ""))
        asked = words(question)
        # the longest run of words the two share, in order
        start, there, length = difflib.SequenceMatcher(
            None, asked, described, autojunk=False
        ).find_longest_match(0, len(asked), 0, len(described))
        context = described[max(0, there - 3) : there + length]
        if length < span or _NEGATING.intersection(context):
            continue
        rest = asked[:start] + asked[start + length :]
        if set(rest) <= _ONLY_ASKS_THE_IMAGE:
            problems.append(
                f"the yes/no question '{question}' asks whether the image is what the "
                f"description says, and answers '{item['answer']}'"
            )
    return problems


_STARTS_WHAT = re.compile(r"^\W*(what|which)\b", re.IGNORECASE)


def kind_word_problems(qa: Mapping[str, Any]) -> list[str]:
    """How items that ask What or Which: MQA and the released data file an item by its
    question word (the released data has none of these)."""
    return [
        f"the how item '{item['question']}' asks what, not how"
        for item in qa.get("how") or []
        if _STARTS_WHAT.match(str(item.get("question", "")))
        and not re.search(r"\bhow\b", str(item.get("question", "")), re.IGNORECASE)
    ]


# ----------------------------------------------------------------------------- repeated text


@functools.lru_cache(maxsize=TEXTS_REMEMBERED)  # a stage check's texts, read again by the critic
def repeated_sentence(text: str, min_words: int = 4) -> str | None:
    """A sentence of at least ``min_words`` words written twice in one text (case and
    punctuation ignored), or None."""
    seen: set[tuple[str, ...]] = set()
    for sentence in _SENTENCES.split(text):
        key = tuple(words(sentence))
        if len(key) >= min_words and key in seen:
            return sentence.strip()
        seen.add(key)
    return None


# ----------------------------------------------------------------------------- pipeline talk

_PIPELINE_TALK = re.compile(
    r"\b(reviewer|the critic|rejection|was rejected|were rejected|previous (description|answer|"
    r"explanation|questions|version)|corrected (description|answer|explanation)|"
    r"the (given )?schema|the detector evidence|the annotation says|"
    # the describer's text, which a tuned model never sees: "not specified in the description"
    # (the demo's lottery Q-A, Dec 8), "The description provided does not mention ..."
    r"(in|from|by|according to|based on|per) the (given |provided )?description|"
    r"the (given |provided )?description (says|states|mentions|does|doesn't|notes|indicates|"
    r"provided|given))\b",
    re.IGNORECASE,
)
#: words every match of :data:`_PIPELINE_TALK` holds one of (lower case)
_PIPELINE_TALK_HINTS = (
    "reviewer", "critic", "rejection", "rejected", "previous", "corrected", "schema",
    "detector evidence", "annotation says", "description",
)  # fmt: skip


@functools.lru_cache(maxsize=TEXTS_REMEMBERED)  # a stage check's texts, read again by the critic
def pipeline_talk(text: str) -> str | None:
    """The words by which a text talks about the pipeline (a reviewer, a rejection, the
    schema) instead of the image, or None."""
    match = hinted_search(_PIPELINE_TALK, _PIPELINE_TALK_HINTS, text)
    return match.group(0) if match else None


def copied_feedback(text: str, feedback: str, span: int = 8) -> str | None:
    """A run of ``span`` words the text copies from the critic's ``feedback``, or None."""
    fed = words(feedback)
    if len(fed) < span:
        return None
    grams = {tuple(fed[i : i + span]) for i in range(len(fed) - span + 1)}
    tokens = words(text)
    for i in range(len(tokens) - span + 1):
        if tuple(tokens[i : i + span]) in grams:
            return " ".join(tokens[i : i + span])
    return None


# ----------------------------------------------------------------------------- the rule's reason

_INVENTED_AUDIENCE = re.compile(
    r"\b(suitable|unsuitable|appropriate|inappropriate|intended|meant|aimed|recommended)\s+"
    r"(for|to)\s+(people|individuals|persons|those|anyone|someone|viewers|users|everyone|"
    r"audiences?)\s+who\b[^.;!?]*",
    re.IGNORECASE,
)


#: "appropriate for a professional audience, such as lawyers": an audience named by a kind
_KIND_OF_AUDIENCE = re.compile(
    r"\b(suitable|unsuitable|appropriate|inappropriate|intended|meant|aimed|recommended)\s+"
    r"(for|to)\s+((?:a|an|the)\s+)?([\w-]+(\s+[\w-]+)?)\s+(audiences?|viewers|users)"
    r"(,?\s+such as[^.;!?]*)?",
    re.IGNORECASE,
)
#: words that point at the rule's own audience rather than name another one ("the audience":
#: the demo's board-game argument was rejected for "appropriate for the audience")
_OWN_AUDIENCE = frozenset({"given", "rule", "rule's", "target", "intended", "this", "its",
                           "same", "specified", "stated", "the"})  # fmt: skip


#: "appropriate for all audiences": every audience, the rule's among them, not another one
#: invented (the demo's flower under a safe verdict was rejected for it)
_EVERY_AUDIENCE = frozenset({"all", "every", "any", "general"})


def audience_words(policy: Policy, rule: str) -> set[str]:
    """Content lemmas that name the rule's audience: its age group and culture, in the
    policy's own words, plus the plain words for those ages."""
    spec = policy.rules[rule]
    return set(_audience_words(f"{spec.audience.age_group} {spec.audience.culture}"))


@functools.lru_cache(maxsize=256)
def _audience_words(text: str) -> frozenset[str]:
    """:func:`audience_words` of a rule's audience text, computed once per text (two checks
    ask for it for every rule variant of every sample)."""
    found = set(content_lemmas(text))
    if re.search(r"under\s*1[0-9]|child", text, re.IGNORECASE):
        found |= {"child", "children", "kid", "minor", "young"}
    if re.search(r"18|adult|over", text, re.IGNORECASE):
        found |= {"adult", "grown"}
    if re.search(r"13", text):
        found |= {"teen", "teenager", "adolescent"}
    return frozenset(found)


def invented_audience(argument: str, policy: Policy, rule: str) -> str | None:
    """An audience the argument defines by a clause the rule does not make ("not suitable for
    individuals who are not interested in board games"), or None. The rule's audience is an
    age group and a culture; a "who ..." clause naming neither is invented."""
    allowed = audience_words(policy, rule)
    for match in _INVENTED_AUDIENCE.finditer(argument):
        # every "who ..." clause must name the audience: "who are not interested in board
        # games or who do not have children in their lives" names children in the second
        # clause only, and the first is still an invented audience
        clauses = re.split(r"\bwho\b", match.group(0), flags=re.IGNORECASE)[1:]
        if any(not set(content_lemmas(clause)) & allowed for clause in clauses):
            return match.group(0).strip()
    for match in _KIND_OF_AUDIENCE.finditer(argument):
        kind = match.group(4).lower().split()
        if set(kind) & _OWN_AUDIENCE:
            continue
        if set(kind) & _EVERY_AUDIENCE:
            continue
        if not set(content_lemmas(match.group(0))) & allowed:
            return match.group(0).strip()
    return None


#: "appropriate for a child", "not suitable for this audience", "inappropriate for everyone":
#: what an argument says the image is fit for (``neg``: its negation)
_FIT_FOR = re.compile(
    r"\b(?P<neg>not\s+|never\s+|in|un)?(?P<word>appropriate|suitable|acceptable|harmless|"
    r"fine)\s+(?:for|to)\s+(?P<who>(?:a\s+)?(?:child|children|kids?|minors?)|young\s+"
    r"(?:audiences?|viewers|people|children)|everyone|all\s+(?:ages|audiences)|"
    r"(?:this|the|its|that)\s+audience)\b",
    re.IGNORECASE,
)
_FIT_FOR_HINTS = ("appropriate", "suitable", "acceptable", "harmless", "fine")
_CHILD = re.compile(r"child|kid|minor|young", re.IGNORECASE)
_NEGATION = re.compile(r"\b(not|no|nothing|none|never|without|neither|nor)\b|n't\b", re.IGNORECASE)


def fitness_contradiction(argument: str, flagged: bool, child_rule: bool) -> str | None:
    """A claim in the argument that the image is fit (or unfit) for an audience, against the
    verdict it argues, or None. The demo's accepted teasing meme, judged sexy under a rule for
    children, said "the image is appropriate for a child or a conservative viewer" (copied from
    the context interpreter) and, under R2, "making it suitable for this audience".

    Flagged: any "fit for a child / everyone / this audience" contradicts it. Not flagged:
    "unfit for everyone / this audience" does, and "unfit for children" does only under a rule
    whose audience is children (under an adults' rule it is the reason adults may see it)."""
    lowered = argument.lower()
    if not any(h in lowered for h in _FIT_FOR_HINTS):
        return None
    for match in _FIT_FOR.finditer(argument):
        negated = match.group("neg") is not None
        who = match.group("who")
        if flagged and not negated:
            return match.group(0)
        if not flagged and negated and (not _CHILD.search(who) or child_rule):
            # "does not show anything that would be inappropriate for children", "which is
            # not considered inappropriate for children": a denied unfitness agrees with a
            # verdict that clears the image
            start = max(
                argument.rfind(".", 0, match.start()), argument.rfind(";", 0, match.start())
            )
            if _NEGATION.search(argument, start + 1, match.start()):
                continue
            return match.group(0)
    return None


def sentence_around(text: str, phrase: str) -> str:
    """The sentence of ``text`` that holds ``phrase`` (``phrase`` itself when it is not
    found): feedback that quotes the whole sentence tells a model what to leave out."""
    at = text.find(phrase)
    if at < 0:
        return phrase
    start = max(text.rfind(". ", 0, at), text.rfind("; ", 0, at))
    end = min((i for i in (text.find(". ", at), text.find("; ", at)) if i >= 0), default=-1)
    return text[start + 2 if start >= 0 else 0 : end + 1 if end >= 0 else len(text)].strip()


def rests_on_rule(argument: str, policy: Policy, rule: str, reason: str) -> bool:
    """Whether the argument names the rule's audience (age group or culture) or uses the
    rule's reason (two of its content words, or all when it has fewer)."""
    said = set(content_lemmas(argument))
    if said & audience_words(policy, rule):
        return True
    because = set(content_lemmas(reason))
    return bool(because) and len(said & because) >= min(2, len(because))


# ----------------------------------------------------------------------------- over a state


def _texts(state: Mapping[str, Any]) -> Iterable[tuple[str, str, str, str | None]]:
    """(stage, where, text, rule) for every model-written text of a pipeline state."""
    sample = state.get("sample")
    given = sample is not None and getattr(sample, "given_description", None) is not None
    if state.get("description") and not given:
        yield "describer", "the description", state["description"], None
    if state.get("context"):
        yield "context_interpreter", "the context", state["context"], None
    for rule, item in (state.get("explanations") or {}).items():
        yield "explainer", f"under {rule} the explanation", item["explanation"], rule
    qa = state.get("qa") or {}
    for kind in ("yes_no", "multiple_choice", "what", "how"):
        for item in qa.get(kind) or []:
            text = " ".join([str(item.get("question", "")), *map(str, item.get("options") or []),
                             str(item.get("answer", ""))])  # fmt: skip
            yield "qa_writer", f"the {kind} item '{item.get('question', '')}'", text, None


def _feedback_for(state: Mapping[str, Any], stage: str) -> list[str]:
    out = []
    for target, text in (state.get("feedback") or {}).items():
        name = getattr(target, "stage", target)
        if name == stage and text:
            out.append(str(text))
    return out


def record_checks(
    policy: Policy, state: Mapping[str, Any], want: Callable[[str], bool] | None = None
) -> list[tuple[Check, str | None]]:
    """Every check of this module over a pipeline state, each with the rule variant it is
    about (None: the sample). Passing checks are included, so a clean run shows what ran.

    ``want`` (a stage name -> whether its checks are wanted; None: every stage's) leaves out
    the work of checks about other stages. One difference from filtering the whole list: the
    passing ``no_pipeline_talk`` row (which stands for every text) is added when none of the
    wanted stages' texts talks about the pipeline, since the others are not read."""
    out: list[tuple[Check, str | None]] = []
    talk: list[str] = []
    repeats: dict[str, list[str]] = {}
    for stage, where, text, rule in _texts(state):
        if not wanted(want, stage):
            continue
        said = pipeline_talk(text)
        copied = next(
            (c for fb in _feedback_for(state, stage) if (c := copied_feedback(text, fb))), None
        )
        if said or copied:
            why = f"copies the reviewer's feedback ('{copied}')" if copied else f"says '{said}'"
            msg = (
                f"{where} {why}: write about the image, never about the review or the texts "
                "you were given"
            )
            out.append((Check("no_pipeline_talk", stage, False, msg), rule))
            talk.append(stage)
        twice = repeated_sentence(text)
        if twice:
            repeats.setdefault(stage, []).append(f"{where} writes '{twice[:100]}' twice")
            out.append(
                (Check("no_repeated_sentence", stage, False,
                       f"{where} writes the sentence '{twice[:100]}' twice; say it once"), rule)
            )  # fmt: skip
    if not talk and wanted(want, "describer"):
        out.append((Check("no_pipeline_talk", "describer", True), None))
    if wanted(want, "explainer"):
        out += [(c, r) for c, r in _explanation_checks(policy, state)]
    qa = state.get("qa") if wanted(want, "qa_writer") else None
    rule = state.get("qa_rule")
    if qa and rule and rule in (state.get("explanations") or {}):
        verdict = state["explanations"][rule]["verdict"]
        record = " ".join(
            [state.get("description") or "", state["explanations"][rule]["explanation"]]
        )
        problems = (
            qa_verdict_problems(qa, verdict, policy)
            + mc_record_problems(qa, record)
            + question_set_problems(qa)
            + kind_word_problems(qa)
            + restated_description_problems(qa, state.get("description") or "")
            + unsupported_number_problems(qa, record)
        )
        out.append(
            (Check("qa_agrees_with_record", "qa_writer", not problems, "; ".join(problems)), None)
        )
    return out


def _explanation_checks(
    policy: Policy, state: Mapping[str, Any]
) -> Iterable[tuple[Check, str | None]]:
    """Per rule variant: the argument rests on the rule's audience or reason and invents no
    audience of its own."""
    category = state.get("category")
    for rule, item in (state.get("explanations") or {}).items():
        argument = item.get("argument") or item["explanation"]
        if rule not in policy.rules:
            continue
        spec = policy.rules[rule]
        audience = f"age {spec.audience.age_group}, {spec.audience.culture} culture"
        flagged = item.get("verdict") in policy.verdicts and policy.is_flagged(item["verdict"])
        child_rule = "child" in audience_words(policy, rule)
        reason = ""
        if category and category in policy.categories:
            try:
                reason = policy.reason(category, rule)
            except (KeyError, ValueError):
                reason = ""
        against = fitness_contradiction(argument, flagged, child_rule)
        if against:
            # the sentence to leave out, and what to argue from instead: told only the phrase
            # and the verdict, the demo's explainer wrote "not appropriate for children" under
            # a clearing verdict on each retry; told what the verdict means for the audience,
            # it wrote about fitness all the more
            msg = (
                f"under {rule} the sentence '{sentence_around(argument, against)}' calls the "
                f"image '{against}', against its verdict '{item['verdict']}' for the rule's "
                f"audience ({audience}): leave that claim out"
                + (f" and argue from the rule's reason ('{reason}')" if reason else "")
            )
            yield Check("argument_agrees_with_verdict", "explainer", False, msg), rule
            continue
        yield Check("argument_agrees_with_verdict", "explainer", True), rule
        invented = invented_audience(argument, policy, rule)
        if invented:
            msg = (
                f"under {rule} the argument invents an audience ('{invented}'): the rule's "
                f"audience is {audience}; argue from it and from the rule's reason"
            )
            yield Check("argument_rests_on_rule", "explainer", False, msg), rule
            continue
        if reason and not rests_on_rule(argument, policy, rule, reason):
            msg = (
                f"under {rule} the argument names neither the rule's audience ({audience}) nor "
                f"its reason ('{reason}'): build the argument on them"
            )
            yield Check("argument_rests_on_rule", "explainer", False, msg), rule
            continue
        yield Check("argument_rests_on_rule", "explainer", True), rule
