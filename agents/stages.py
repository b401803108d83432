"""The stage registry: every generation stage declared once, in the module of its role.

A stage is declared by a :class:`StageSpec` (``STAGE = StageSpec(...)`` in its role's module):
its name (which is also its model role and the prefix of its two prompt templates), its place in
the chain, the sample-state keys it reads and writes, its output schema, whether it runs once
per rule variant, and whether it describes the image itself (skipped, and never sent back to,
for samples that arrive with a description). Everything that used to repeat the stage names
derives from the registry: the graph's nodes and edges, the critic's stage order and the stages
its LLM critique may name, the model layer's role list, ``--help`` and the rows the recorder
writes into the store's ``stage`` column.

Control data between the critic and the stages is typed: a :class:`Target` (stage and, for a
per-rule stage, the rule variant) keys the feedback a stage gets on its next attempt. Nothing
is parsed back out of message text.

Adding a stage = one module defining ``STAGE`` (its ``ask`` and ``write`` functions) plus its
``<name>.system.j2``/``<name>.user.j2`` templates, and its module named in
``BUILTIN_STAGE_MODULES`` (or, for an experiment, ``default_registry().extended(spec)``).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from agents.schemas import FULL, Lengths, QACounts
from evaluators.seed_leak import LeakMode
from prompts import PromptTemplate, load_prompt

if TYPE_CHECKING:  # types only: the model layer imports this module while it initialises
    from pydantic import BaseModel

    from agents.models.base import ImageInput
    from agents.models.result import CallResult
    from agents.role_call import LayerLike
    from data.policy_models import Policy

#: the role modules whose ``STAGE`` make up the default pipeline (order comes from each
#: stage's ``order``, not from this tuple)
BUILTIN_STAGE_MODULES = (
    "agents.describer",
    "agents.context_interpreter",
    "agents.explainer",
    "agents.qa_writer",
)
#: the role modules of the paper's released pipeline (``--preset paper``, ``pipeline: paper``):
#: one image-seeing call answering three questions, then Q-A from its explanation in two passes
PAPER_STAGE_MODULES = (
    "agents.paper_answers",
    "agents.paper_qa",
    "agents.paper_mc",
)
SeedLeakFilter = LeakMode  # the seed-leak filter's own modes
QASource = Literal["explanation", "answers"]
ModerationFocus = Literal["always", "mixed", "never"]
ExplanationText = Literal["answer", "merged"]
QAPasses = Literal["separate", "mixed"]
ImageCall = Literal["ours", "release"]
#: the critic checks every stage's output; it is the graph's fixed last node, not a stage
CRITIC = "critic"
#: the judge scores finished runs (agents/judge.py); a model role, never part of the graph
JUDGE = "judge"
#: the zero-shot moderator role of ``icm moderate --model SPEC`` (finetune/moderate_api.py)
MODERATOR = "moderator"
#: drafts a policy from a moderator's rule text (``icm rules draft``: agents/rule_drafter.py)
RULE_DRAFTER = "rule_drafter"


@dataclass(frozen=True)
class Target:
    """What the critic sends back: a stage, and for a per-rule stage the rule variant."""

    stage: str
    rule: str | None = None

    @property
    def label(self) -> str:
        """``<stage>:<rule>`` or ``<stage>``: the ``stage`` a call's trace row is filed under
        (a label for people and the viewer, never read back as control data)."""
        return f"{self.stage}:{self.rule}" if self.rule else self.stage


@dataclass(frozen=True)
class PaperOptions:
    """How the paper pipeline's stages behave, each point on its own (``GenerateConfig.paper``).

    ``seed_leak_filter``: ``rest`` drops a text from its first sentence that mentions the seed
    it was given onwards (what the release's ``check_all_MLLM_output_content.py`` does: its
    keep-flag is never reset), ``sentence`` drops only such sentences, ``off`` keeps all.
    ``qa_from``: the Q-A passes read the explanation only (``explanation``) or all three
    answers (``answers``). ``moderation_focus``: the Q-A prompts add "All questions are
    related to content moderation": in every pass (``always``, ours), only in a pass that asks
    every kind of question at once (``mixed``: the release sends it in its mixed prompt only,
    not in its separate ``qa`` and ``mc`` prompts), or never. ``explanation``: the stored and
    exported explanation (and so the Q-A source) is answer 3 alone (``answer``, ours) or the
    three answers merged as the release's post-processing merges them (``merged``).
    ``qa_passes``: yes/no/what/how then a separate multiple-choice pass (``separate``) or one
    pass asking all four kinds (``mixed``, the release's ``--q_type mix``). ``image_call``: our
    system message and the image after the text (``ours``), or no system message and the image
    first (``release``, as its ``get_stage_prompt`` builds the request). ``seeds``: see below.
    ``seed_leak_filter`` ``release``: the release's filter as it applies it, over the merged
    text, split on every ".", with its own black words only.
    """

    seed_leak_filter: SeedLeakFilter = "rest"
    qa_from: QASource = "explanation"
    moderation_focus: ModerationFocus = "always"
    explanation: ExplanationText = "answer"
    qa_passes: QAPasses = "separate"
    image_call: ImageCall = "ours"
    seeds: Mapping[str, str] | None = None
    """The release's seed sentence per category (read from a checkout); None: the policy's."""


@dataclass(frozen=True)
class StageCall:
    """The explicit dependencies of one attempt of one stage (nothing else reaches a role)."""

    layer: LayerLike
    policy: Policy
    sample_id: str
    attempt: int
    feedback: str | None = None
    rule: str | None = None
    """The rule variant a per-rule stage is asked about; None for the others."""
    lengths: Lengths = FULL
    qa_counts: QACounts = field(default_factory=QACounts)
    images: Callable[[], Sequence[ImageInput]] = tuple
    """The sample's images, loaded on demand (only a stage that looks at the image calls it)."""
    paper: PaperOptions = field(default_factory=PaperOptions)
    """The paper pipeline's own switches (read only by its stages)."""


#: the declared inputs of a stage: the sample-state keys it ``reads``, and their values
Inputs = Mapping[str, Any]
AskFn = Callable[[StageCall, Inputs], Awaitable["CallResult[Any]"]]
WriteFn = Callable[[Any, StageCall, Inputs], dict[str, Any]]
SchemaFn = Callable[[StageCall, Inputs], "type[BaseModel]"]
RuleFn = Callable[[Inputs], str | None]


def _no_rule(inputs: Inputs) -> str | None:
    return None


@dataclass(frozen=True)
class StageSpec:
    """One generation stage, declared once.

    ``ask`` makes the stage's model call from its :class:`StageCall` and inputs; ``write`` turns
    the validated value into the state update (for a per-rule stage: the item stored under the
    rule in ``writes``' single key). ``writes`` maps each key the stage writes to its value
    before the stage has run: a sample starts with these values, and a redo of an earlier
    stage resets them, so later stages are rebuilt from the redone one.
    """

    name: str
    order: int
    """Place in the chain: stages run by increasing ``order``, then the critic."""
    reads: tuple[str, ...]
    writes: Mapping[str, Any]
    schema: SchemaFn
    ask: AskFn
    write: WriteFn
    summary: str
    """A few words for ``--help``'s stage chain."""
    per_rule: bool = False
    """Runs once per selected rule variant (concurrently); a redo names the failing rules."""
    describes_image: bool = False
    """Skipped for samples that come with a description; the critic sends such a sample back
    to the first stage that does run instead."""
    about_rule: RuleFn = _no_rule
    """For a single-call stage about one rule variant (the Q-A writer): which one, recorded
    with its output."""

    def __post_init__(self) -> None:
        if self.per_rule and len(self.writes) != 1:
            raise ValueError(
                f"stage {self.name!r}: a per-rule stage writes exactly one key (rule -> item), "
                f"not {sorted(self.writes)}"
            )
        if self.name in (CRITIC, JUDGE):
            raise ValueError(f"stage name {self.name!r} is reserved for the {self.name} role")

    @property
    def templates(self) -> tuple[PromptTemplate, PromptTemplate]:
        """The stage's system and user templates (``<name>.system``, ``<name>.user``)."""
        return load_prompt(f"{self.name}.system"), load_prompt(f"{self.name}.user")

    def runs_for(self, has_description: bool) -> bool:
        """Whether the stage runs for a sample (one with a given description skips the image
        stages)."""
        return not (has_description and self.describes_image)


class StageRegistry:
    """The stages of one pipeline, in chain order. Immutable once built: ``extended`` copies."""

    def __init__(
        self, specs: Iterable[StageSpec] = (), aliases: Mapping[str, str] | None = None
    ) -> None:
        self._specs: dict[str, StageSpec] = {}
        for spec in specs:
            self._add(spec)
        self.aliases: dict[str, str] = dict(aliases or {})
        """Stage names the critic's checks use (our pipeline's) -> the stage of this registry
        that does that job (the paper pipeline's three-question call describes and explains)."""
        unknown = sorted(set(self.aliases.values()) - set(self._specs))
        if unknown:
            raise ValueError(f"stage aliases point at unregistered stages {unknown}")

    def canonical(self, stage: str) -> str:
        """``stage``, or the registered stage an alias names."""
        return stage if stage in self._specs else self.aliases.get(stage, stage)

    def _add(self, spec: StageSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"stage {spec.name!r} is registered twice")
        clash = [s.name for s in self._specs.values() if s.order == spec.order]
        if clash:
            raise ValueError(f"stages {clash[0]!r} and {spec.name!r} share order {spec.order}")
        self._specs[spec.name] = spec
        self._specs = dict(sorted(self._specs.items(), key=lambda kv: kv[1].order))

    def extended(self, *specs: StageSpec) -> StageRegistry:
        """A registry with ``specs`` added (the default one is never changed in place)."""
        return StageRegistry([*self._specs.values(), *specs], self.aliases)

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def get(self, name: str) -> StageSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(self._specs)
            raise KeyError(f"unknown stage {name!r} (stages: {known})") from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def position(self, stage: str) -> int:
        """Chain position of ``stage`` (the critic's own checks come after every stage)."""
        if stage == CRITIC:
            return len(self._specs)
        stage = self.canonical(stage)
        if stage not in self._specs:
            known = ", ".join((*self._specs, CRITIC))
            raise ValueError(f"a check names stage {stage!r}, which is not registered ({known})")
        return list(self._specs).index(stage)

    def after(self, stage: str) -> tuple[StageSpec, ...]:
        """The stages that come later in the chain than ``stage``."""
        names = list(self._specs)
        return tuple(self._specs[n] for n in names[names.index(stage) + 1 :])

    def chain(self, has_description: bool) -> tuple[str, ...]:
        """The nodes a sample visits in order, ending with the critic."""
        return (*(s.name for s in self if s.runs_for(has_description)), CRITIC)

    def initial_outputs(self) -> dict[str, Any]:
        """Every stage's output keys at their not-yet-run values."""
        out: dict[str, Any] = {}
        for spec in self:
            out |= {key: _fresh(value) for key, value in spec.writes.items()}
        return out

    def model_roles(self) -> tuple[str, ...]:
        """Every role a model can be bound to: the stages, the critic, the judge, the
        zero-shot moderator and the rule drafter."""
        return (*self._specs, CRITIC, JUDGE, MODERATOR, RULE_DRAFTER)

    def help_chain(self) -> str:
        """``describer -> ... -> critic`` for ``--help``."""
        return " -> ".join((*(s.summary for s in self), CRITIC))


def _fresh(value: Any) -> Any:
    """A new copy of a mutable not-yet-run value (state dicts are replaced, never shared)."""
    return type(value)() if isinstance(value, dict | list) and not value else value


def _declared(module_names: Iterable[str]) -> list[StageSpec]:
    specs = []
    for module_name in module_names:
        module = importlib.import_module(module_name)
        spec = getattr(module, "STAGE", None)
        if not isinstance(spec, StageSpec):
            raise TypeError(f"{module_name} declares no STAGE (a StageSpec)")
        specs.append(spec)
    return specs


@cache
def default_registry() -> StageRegistry:
    """The built-in pipeline: the ``STAGE`` of each module in ``BUILTIN_STAGE_MODULES``."""
    return StageRegistry(_declared(BUILTIN_STAGE_MODULES))


@cache
def paper_registry(multiple_choice: bool = True) -> StageRegistry:
    """The paper's released pipeline (``PAPER_STAGE_MODULES``); without its separate
    multiple-choice pass when ``multiple_choice`` is False. The critic's checks, which name our
    stages, are mapped onto the paper's: the three-question call describes, interprets and
    explains; the yes/no/what/how pass writes the Q-A."""
    specs = _declared(PAPER_STAGE_MODULES)
    if not multiple_choice:
        specs = [s for s in specs if s.name != "paper_mc"]
    answers, qa = specs[0].name, specs[1].name
    aliases = {
        "describer": answers,
        "context_interpreter": answers,
        "explainer": answers,
        "qa_writer": qa,
    }
    return StageRegistry(specs, aliases)


def all_model_roles() -> tuple[str, ...]:
    """Every role a model can be bound to in any built-in pipeline: ours (with the critic,
    judge and moderator), then the paper pipeline's stages."""
    ours = default_registry().model_roles()
    return (*ours, *(n for n in paper_registry().names if n not in ours))
