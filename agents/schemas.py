"""What each generation role must return, as pydantic models with hard bounds.

The bounds (``max_length``, item counts) are part of the JSON schema the model is constrained
by: a small local model under grammar-constrained decoding cannot ramble past them, and a hosted
model is told the same limits. :class:`Lengths` holds them; ``FULL`` suits hosted models (the
released ICM-Instruct explanations run to ~1,200 characters), ``SHORT`` keeps the offline demo
on two CPU cores within minutes. Models whose fields depend on the policy (verdict labels,
category keys) or on the lengths are built by the cached ``*_model`` functions; each builds on
a typed base (``DescriptionValue``, ``ExplanationValue``, ...) that names the fields code reads,
so a role's ``CallResult[ExplanationValue]`` is checked statically while the bounds stay dynamic.
The bases carry no docstring: the JSON schema a model is shown is exactly that of the dynamic
model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model


@dataclass(frozen=True)
class Lengths:
    """Character limits of the generated texts."""

    description: int = 900
    element: int = 60
    context_field: int = 300
    explanation: int = 1400
    question: int = 200
    answer: int = 300
    option: int = 100


FULL = Lengths()
SHORT = Lengths(description=350, element=40, context_field=120, explanation=450, question=120,
                answer=120, option=60)  # fmt: skip
#: ``FULL`` with the explanation bound at 1,000 characters: the longest bound llama.cpp's grammar
#: can enforce (``providers.local_llamacpp.MAX_GRAMMAR_LENGTH``). Above it the bound is left to
#: validation, and a 1.5B model that loops under greedy decoding runs to ``max_tokens`` (seen:
#: one explanation, three attempts of 1,024 tokens each, 11 minutes); within it a loop is cut
#: at the bound and the critic sends the text back.
MEDIUM = Lengths(explanation=1000)
LENGTH_PROFILES: dict[str, Lengths] = {"full": FULL, "medium": MEDIUM, "short": SHORT}


@dataclass(frozen=True)
class QACounts:
    """How many items of each kind the Q-A writer writes (the paper's 3/3/2/2)."""

    yes_no: int = 3
    multiple_choice: int = 3
    what: int = 2
    how: int = 2


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Typed bases of the dynamic models (no docstrings: they would enter the JSON schema).
class DescriptionValue(_Out):
    description: str
    key_elements: list[str]


class ProposalValue(DescriptionValue):
    proposed_category: str


class ContextValue(_Out):
    setting: str
    atmosphere: str
    intent: str
    audience_cues: str


class ArgumentValue(_Out):
    explanation: str


class ExplanationValue(ArgumentValue):
    verdict: str


class PaperAnswersValue(_Out):
    explicit_description: str
    implicit_description: str
    explanation: str


class QAValue(_Out):
    yes_no: list[Any]
    multiple_choice: list[Any]
    what: list[Any]
    how: list[Any]


def _model(name: str, base: Any, **fields: Any) -> Any:
    """``create_model`` with the fields given as plain values (mypy cannot type dynamic
    ``Literal[...]`` or ``list[Annotated]`` field specs; the result's type is its base)."""
    return create_model(name, __base__=base, **fields)


def _text(limit: int, description: str, min_length: int = 3) -> Any:
    return (str, Field(min_length=min_length, max_length=limit, description=description))


@cache
def description_model(lengths: Lengths = FULL) -> type[DescriptionValue]:
    """The describer's explicit description: what is visibly in the image."""
    element = Annotated[str, Field(min_length=2, max_length=lengths.element)]
    return _model(
        "Description",
        DescriptionValue,
        description=_text(
            lengths.description,
            "What the image shows: people, clothing, exposure, pose, actions, objects, text. "
            "Only what is visible.",
            min_length=20,
        ),
        key_elements=(
            list[element],  # type: ignore[valid-type]
            Field(
                min_length=1,
                max_length=6,
                description="Distinct short noun phrases for the visible elements that "
                "matter, each in the description's own words.",
            ),
        ),
    )


@cache
def context_model(lengths: Lengths = FULL) -> type[ContextValue]:
    """The context interpreter's implicit description: what the image suggests."""
    n = lengths.context_field
    return _model(
        "Context",
        ContextValue,
        setting=_text(n, "Where the scene takes place."),
        atmosphere=_text(n, "The mood or atmosphere the image conveys."),
        # a noun phrase here ("The apparent purpose of the image or its poses.") was written
        # back as a sentence's subject by the demo's model, and the explainer copied it on
        intent=_text(
            n, "What the image seems made to do: sell, warn, amuse, inform, invite, or pose."
        ),
        # "What in the image matters for a child or a conservative viewer" was read by the
        # demo's model as a verdict: "The image is appropriate for a child or a conservative
        # viewer" of a meme judged sexy, which the explainers then copied
        audience_cues=_text(
            n,
            "Which contents of the image a moderator would weigh (bare skin, violence, "
            "gambling, its text), or none.",
        ),
    )


@cache
def explanation_model(labels: tuple[str, ...], lengths: Lengths = FULL) -> type[ExplanationValue]:
    """The explainer's output: an explanation ending in a verdict from ``labels``."""
    return _model(
        "Explanation",
        ExplanationValue,
        explanation=_text(
            lengths.explanation,
            "Why the verdict holds for this audience, citing what is seen; the last sentence "
            "states the verdict.",
            min_length=40,
        ),
        verdict=(Literal[labels], Field(description="The verdict under the rule.")),  # type: ignore[valid-type]
    )


@cache
def argument_model(lengths: Lengths = FULL) -> type[ArgumentValue]:
    """The explainer's output when the rule table fixes the verdict: the argument for it only
    (no verdict field, no concluding verdict sentence: code writes the conclusion)."""
    return _model(
        "Argument",
        ArgumentValue,
        explanation=_text(
            lengths.explanation,
            "Why the rule table's verdict holds for this audience, citing what is seen. "
            "No concluding verdict sentence: the conclusion is added from the rule table.",
            min_length=40,
        ),
    )


@cache
def paper_answers_model(term: str, lengths: Lengths = FULL) -> type[PaperAnswersValue]:
    """The paper pipeline's one image-seeing call: its three questions answered in turn (the
    release's ``vllm_data_generation.py`` asks them in one prompt, numbered)."""
    return _model(
        "PaperAnswers",
        PaperAnswersValue,
        explicit_description=_text(
            lengths.description,
            "Question 1: the image in detail with its explicit content, such as the people's "
            "movements and clothes.",
            min_length=20,
        ),
        implicit_description=_text(
            lengths.description,
            "Question 2: the implicit content of the image in detail, such as its overall "
            "atmosphere.",
            min_length=20,
        ),
        explanation=_text(
            lengths.explanation,
            f"Question 3: why the image is or is not {term}, from its explicit and implicit "
            "content.",
            min_length=40,
        ),
    )


@cache
def description_with_proposal_model(
    categories: tuple[str, ...], lengths: Lengths = FULL
) -> type[ProposalValue]:
    """For images without an annotation: the description plus a proposed category."""
    base = description_model(lengths)
    return _model(
        "DescriptionWithProposal",
        (base, ProposalValue),
        proposed_category=(
            Literal[categories],  # type: ignore[valid-type]
            Field(description="The policy category that best matches what is visible."),
        ),
    )


#: the words a question of each kind starts with (MQA and the released data file an item by its
#: question word). Part of the schema as a ``pattern``, so grammar-constrained decoding cannot
#: file "What is the purpose of the image?" as a How item; a hosted model is shown the pattern.
QUESTION_STARTS: dict[str, tuple[str, ...]] = {
    "yes_no": ("Is", "Are", "Does", "Do", "Did", "Can", "Could", "Would", "Should", "Has",
               "Have", "Was", "Were", "Will"),
    "what": ("What", "Which"),
    "how": ("How",),
}  # fmt: skip
#: a character of a question under a pattern: no quote, backslash or control character, so the
#: grammar llama.cpp builds from the pattern can only produce a valid JSON string
_QUESTION_CHAR = r'[^"\\\x00-\x1f]'


def question_pattern(kind: str, limit: int) -> str:
    """``^(How) ...?$`` with the length bound inside (a pattern replaces ``maxLength`` in the
    grammar llama.cpp builds, so the bound must be part of it)."""
    starts = QUESTION_STARTS[kind]
    rest = limit - max(map(len, starts)) - 2  # the space after the word and the final "?"
    return rf"^({'|'.join(starts)}) {_QUESTION_CHAR}{{2,{rest}}}\?$"


def _question(kind: str, limit: int) -> Any:
    starts = " or ".join(f"'{w}'" for w in QUESTION_STARTS[kind])
    return (
        str,
        Field(
            min_length=8,
            max_length=limit,
            pattern=question_pattern(kind, limit),
            description=f"A question answerable from the texts, starting with {starts}.",
        ),
    )


@cache
def qa_model(
    n_yes_no: int, n_mc: int, n_what: int, n_how: int, lengths: Lengths = FULL
) -> type[QAValue]:
    """The Q-A writer's output with exactly the configured number of items of each kind."""
    question = _text(lengths.question, "A question answerable from the texts.", min_length=8)
    yes_no = _model(
        "YesNoItem",
        _Out,
        question=_question("yes_no", lengths.question),
        answer=(Literal["Yes", "No"], ...),
    )
    choice = _model(
        "MultipleChoiceItem",
        _Out,
        question=question,
        options=(
            list[Annotated[str, Field(min_length=1, max_length=lengths.option)]],  # type: ignore[valid-type]
            Field(
                min_length=4,
                max_length=4,
                description="Four distinct answer options, without letters.",
            ),
        ),
        answer=(Literal["A", "B", "C", "D"], Field(description="Letter of the correct option.")),
    )
    answer = _text(lengths.answer, "The answer.")
    what_item = _model(
        "WhatItem", _Out, question=_question("what", lengths.question), answer=answer
    )
    how_item = _model("HowItem", _Out, question=_question("how", lengths.question), answer=answer)

    def items(kind: type[BaseModel], n: int) -> tuple[object, object]:
        return (list[kind], Field(min_length=n, max_length=n))  # type: ignore[valid-type]

    return _model(
        "QASet",
        QAValue,
        yes_no=items(yes_no, n_yes_no),
        multiple_choice=items(choice, n_mc),
        what=items(what_item, n_what),
        how=items(how_item, n_how),
    )


class ProblemValue(_Out):
    stage: str
    issue: str


class CritiqueValue(_Out):
    consistent: bool
    problems: list[ProblemValue]


@cache
def critique_model(stages: tuple[str, ...]) -> type[CritiqueValue]:
    """The LLM critic's output; a problem names one of ``stages`` (those it may send back)."""
    problem = _model(
        "CriticProblem",
        ProblemValue,
        stage=(Literal[stages], ...),  # type: ignore[valid-type]
        issue=(str, Field(min_length=5, max_length=300)),
    )
    return _model(
        "Critique",
        CritiqueValue,
        __doc__="The LLM critic's judgement of a whole sample.",
        consistent=(
            bool,
            Field(description="True when the stages agree with each other and with the evidence."),
        ),
        problems=(
            list[problem],  # type: ignore[valid-type]
            Field(
                default_factory=list,
                max_length=4,
                description="Hallucinations or contradictions found; empty when consistent.",
            ),
        ),
    )


Description = description_model(FULL)
Context = context_model(FULL)
