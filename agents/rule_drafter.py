"""The rule drafter: a moderator's rule text -> a policy file, checked by the loader, repaired.

The model (role ``rule_drafter``, bound, traced and cached like any role) proposes the term,
orthogonal attributes and rule variants (`PolicyOutline`), then, in a second ask whose schema code
builds from them, the categories with their verdicts (`agents.rule_draft_table`): a known value
of every attribute and a verdict under every rule variant are the schema's, not the model's.
``one_ask`` asks for the whole `PolicyDraft` in one answer instead. Code turns the draft into a
policy file (`agents.rule_draft_policy`) and runs the same loader every policy goes through,
plus the checks only a draft needs. Every issue goes back to the model with what it produced
(the outline, or the file as ``file:line: field: message``), at most ``max_repairs`` times per
ask. A draft that still fails is kept, with its errors appended as YAML comments, and the
outcome says so. What code decides mechanically (a category fixing no attribute or repeating
another's product dropped, a repeated name numbered; once the outline's repairs are spent, a
`none` or audience attribute and a value shared by two attributes dropped) it does, and every
such change is a comment in the file and a line of the run's record: nothing the model wrote is
silently dropped or silently fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from agents.models.result import CallResult
from agents.role_call import LayerLike, ask_role
from agents.rule_draft_policy import (
    Audience,
    Coverage,
    coverage,
    draft_issues,
    fix_outline,
    identifier,
    outline_issues,
    render_policy,
    render_product,
    rule_id,
)
from agents.rule_draft_schema import PolicyDraft, PolicyOutline, outline_model
from agents.rule_draft_table import (
    assemble,
    category_table_model,
    rules_summary,
    table_issues,
    table_rows,
    table_shape,
    tidy_table,
)
from agents.stages import RULE_DRAFTER
from data.policy import PolicyError, PolicyIssue, parse_policy
from data.yaml_lines import YamlSyntaxError, load_located

T = TypeVar("T", bound=BaseModel)

#: how many uncovered attribute products the draft's closing comment lists
_LIST_UNCOVERED = 12


@dataclass
class DraftAttempt:
    """One ask of the model: its call status and, for an answer, the issues found in it."""

    attempt: int
    status: str
    call_id: str
    errors: list[str] = field(default_factory=list)
    step: str = "policy"
    """``outline`` or ``categories`` (two asks), or ``policy`` (one ask)."""
    fixes: list[str] = field(default_factory=list)
    """What code changed in this answer before it was checked (`tidy_table`), or in the last
    outline once its repairs were spent (`fix_outline`)."""


@dataclass
class DraftOutcome:
    """What `draft_policy` ends with. ``text`` is None only when no call returned a draft."""

    text: str | None
    valid: bool
    attempts: list[DraftAttempt]
    errors: list[PolicyIssue]
    coverage: Coverage | None = None
    failure: str | None = None
    """Why the last call returned no draft (its status and error), if it did not."""
    fixes: list[str] = field(default_factory=list)
    """What code changed in the model's answers that the written draft is built from: the
    outline's fixes and the last table's. Written into the file as comments."""

    @property
    def repairs(self) -> int:
        """Asks that repaired an answer (not the first ask of a step)."""
        return _repairs(self.attempts)


def _repairs(attempts: Sequence[DraftAttempt]) -> int:
    return sum(1 for a in attempts if a.attempt > 1 and a.status == "ok")


async def draft_policy(
    layer: LayerLike,
    *,
    rule_text: str,
    file: str,
    source: str,
    spec: str,
    audiences: Sequence[Audience] = (),
    max_repairs: int = 2,
    on_attempt: Callable[[DraftOutcome], None] | None = None,
    one_ask: bool = False,
) -> DraftOutcome:
    """Ask for a draft, check it, send the issues back up to ``max_repairs`` times.

    ``file`` is where the draft will be written (the name its issues carry); ``source`` and
    ``spec`` name the rule file and the model in the draft's header comment. ``on_attempt``
    gets the outcome so far after every checked draft (the command writes it, so a draft
    interrupted while being repaired still leaves its last checked version behind).
    """
    if not one_ask:
        return await _draft_in_two_asks(
            layer, rule_text=rule_text, file=file, source=source, spec=spec,
            audiences=audiences, max_repairs=max_repairs, on_attempt=on_attempt,
        )  # fmt: skip
    attempts: list[DraftAttempt] = []
    last: tuple[str, list[PolicyIssue], PolicyDraft] | None = None

    def check(draft: PolicyDraft) -> _Checked:
        nonlocal last
        text = render_policy(draft, notes=rule_text.strip(), header=_header(source, spec))
        issues = check_draft(text, draft, name=_name(file), file=file, audiences=audiences)
        last = (text, issues, draft)
        return _Checked(issues, [str(issue) for issue in issues], _numbered(text))

    def checked() -> None:
        if on_attempt is not None:
            on_attempt(_ending(last, attempts))

    base = {"rule_text": rule_text.strip(), "audiences": list(audiences)}
    failure = await _ask_and_repair(
        layer, PolicyDraft, base, step="policy", stage=None, max_repairs=max_repairs,
        attempts=attempts, check=check, on_checked=checked,
    )  # fmt: skip
    return _ending(last, attempts, failure=failure)


async def _draft_in_two_asks(
    layer: LayerLike,
    *,
    rule_text: str,
    file: str,
    source: str,
    spec: str,
    audiences: Sequence[Audience],
    max_repairs: int,
    on_attempt: Callable[[DraftOutcome], None] | None,
) -> DraftOutcome:
    """The outline, repaired until its names are sound; then the category table in the schema
    built from it, repaired until the policy file validates. An outline still faulty after its
    repairs goes on to the table all the same: the finished file then carries its errors."""
    attempts: list[DraftAttempt] = []
    base: dict[str, Any] = {"rule_text": rule_text.strip(), "audiences": list(audiences)}
    answers: list[tuple[int, PolicyOutline]] = []

    def check_outline(answer: PolicyOutline) -> _Checked:
        issues = outline_issues(answer, file=file, audiences=audiences)
        answers.append((len(issues), answer))
        return _Checked(issues, [str(issue) for issue in issues], answer.model_dump_json(indent=1))

    failure = await _ask_and_repair(
        layer, outline_model(len(audiences)), base, step="outline", stage="outline",
        max_repairs=max_repairs, attempts=attempts, check=check_outline,
    )  # fmt: skip
    if failure is not None:
        return _ending(None, attempts, failure=failure)
    outline = answers[-1][1]
    outline_fixes: list[str] = []
    if attempts[-1].errors:  # repairs spent: code does the mechanical part, and says so
        # a small model's repair can be worse than what it repaired: the outline with the
        # fewest issues goes on (the latest of equals), and the file says which
        fewest = min(count for count, _ in answers)
        chosen = max(n for n, (count, _) in enumerate(answers) if count == fewest)
        if chosen != len(answers) - 1:
            outline_fixes.append(
                f"used the outline of attempt {chosen + 1} ({fewest} error(s)), not the last "
                f"one ({answers[-1][0]} error(s))"
            )
            outline = answers[chosen][1]
        outline, fixed = fix_outline(outline)
        outline_fixes += fixed
        attempts[-1].fixes = list(outline_fixes)
    shape = table_shape(outline)
    base |= {
        "term": outline.term,
        "attributes": shape.attribute_lines(),
        "rules": rules_summary(outline),
        "wildcard": shape.wildcard,
        "table_feedback": False,
    }
    last: tuple[str, list[PolicyIssue], PolicyDraft] | None = None
    fixes: list[str] = list(outline_fixes)

    def check_table(answer: BaseModel) -> _Checked:
        nonlocal last, fixes
        answered = table_rows(answer)
        rows, table_fixes = tidy_table(shape, answered)
        draft = assemble(outline, shape, rows)
        text = render_policy(draft, notes=rule_text.strip(), header=_header(source, spec))
        issues = check_draft(text, draft, name=_name(file), file=file, audiences=audiences)
        # too few categories once code dropped those that were none is the table's own error
        # (its schema asks for two or more): a one-category sexy draft otherwise "validated"
        in_table = table_issues(rows, len(answered) - len(rows))
        issues += [
            PolicyIssue(file=file, line=None, field="categories", message=m) for m in in_table
        ]
        last = (text, issues, draft)
        fixes = outline_fixes + table_fixes
        # the repair sees its own answer and, where code can say it in the table's terms,
        # what is wrong with it there; the file's errors otherwise
        if in_table:
            return _Checked(issues, in_table, answer.model_dump_json(by_alias=True),
                            table_fixes, {"table_feedback": True})  # fmt: skip
        return _Checked(issues, [str(issue) for issue in issues], _numbered(text), table_fixes)

    def checked() -> None:
        if on_attempt is not None:
            on_attempt(_ending(last, attempts, fixes=fixes))

    failure = await _ask_and_repair(
        layer, category_table_model(shape), base, step="categories", stage="categories",
        max_repairs=max_repairs, attempts=attempts, check=check_table, on_checked=checked,
    )  # fmt: skip
    return _ending(last, attempts, failure=failure, fixes=fixes)


@dataclass
class _Checked:
    """What checking one answer found, and what a repair of it is sent."""

    issues: list[PolicyIssue]
    feedback: list[str]
    """The issues as the repair prompt lists them."""
    previous: str
    """The answer as the repair prompt shows it."""
    fixes: list[str] = field(default_factory=list)
    """What code changed in the answer before it was checked."""
    variables: dict[str, Any] = field(default_factory=dict)
    """Prompt variables the repair sets (over the first ask's)."""


async def _ask_and_repair(
    layer: LayerLike,
    schema: type[T],
    base: dict[str, Any],
    *,
    step: str,
    stage: str | None,
    max_repairs: int,
    attempts: list[DraftAttempt],
    check: Callable[[T], _Checked],
    on_checked: Callable[[], None] | None = None,
) -> str | None:
    """Ask for ``schema`` (prompt variables ``base``, plus ``step``), check the answer, send
    its issues back with what it produced, at most ``max_repairs`` times; every ask goes into
    ``attempts`` and ``on_checked`` runs after each checked answer. Returns None once an answer
    passes or the repairs are spent, or why the last ask returned no answer."""
    feedback: list[str] = []
    previous = ""
    repair: dict[str, Any] = {}
    for attempt in range(1, max_repairs + 2):
        variables = base | repair | {"step": step, "feedback": feedback, "previous": previous}
        result = await _ask(layer, schema, variables, stage, attempt)
        if not result.ok or result.value is None:
            failure = f"{result.status}: {result.error or 'no answer'}"
            attempts.append(DraftAttempt(attempt, result.status, result.call_id, [failure], step))
            return failure
        found = check(result.value)
        errors = [str(issue) for issue in found.issues]
        attempts.append(
            DraftAttempt(attempt, result.status, result.call_id, errors, step, list(found.fixes))
        )
        if on_checked is not None:
            on_checked()
        if not found.issues:
            return None
        feedback, previous, repair = found.feedback, found.previous, found.variables
    return None


async def _ask(
    layer: LayerLike, schema: type[T], variables: dict[str, Any], step: str | None, attempt: int
) -> CallResult[T]:
    """One traced ask of the drafter; ``step`` labels the trace's stage (two asks)."""
    return await ask_role(
        layer,
        role=RULE_DRAFTER,
        schema=schema,
        variables=variables,
        sample_id=None,
        stage=f"{RULE_DRAFTER}:{step}" if step else RULE_DRAFTER,
        attempt=attempt,
    )


def _name(file: str) -> str:
    return file.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "draft"


def _header(source: str, spec: str) -> list[str]:
    return [f"Drafted by `icm rules draft` from {source} with {spec}.", "Status: checking"]


def check_draft(
    text: str,
    draft: PolicyDraft,
    *,
    name: str,
    file: str,
    audiences: Sequence[Audience] = (),
) -> list[PolicyIssue]:
    """The loader's issues with the policy file ``text``, then the draft's own."""
    issues: list[PolicyIssue] = []
    try:
        parse_policy(text, name=name, file=file)
    except PolicyError as exc:
        issues.extend(exc.errors)
    try:
        doc = load_located(text)
    except YamlSyntaxError:  # the loader has reported it; nothing located to add
        return issues
    issues.extend(draft_issues(draft, doc, file=file, audiences=audiences))
    return sorted(issues, key=lambda issue: issue.line or 0)


def draft_coverage(draft: PolicyDraft) -> Coverage:
    """Enumerate the drafted attributes' full product and check the categories against it."""
    attributes = {
        identifier(a.name): [identifier(v.name) for v in a.values] for a in draft.attributes
    }
    categories = {
        identifier(c.name): {identifier(p.attribute): identifier(p.value) for p in c.product}
        for c in draft.categories
    }
    flagged: dict[str, dict[str, bool]] = {}
    for category in draft.categories:
        for ruling in category.verdicts:
            table = flagged.setdefault(rule_id(ruling.rule), {})
            table.setdefault(identifier(category.name), ruling.flagged)
    return coverage(attributes, categories, flagged)


def _ending(
    last: tuple[str, list[PolicyIssue], PolicyDraft] | None,
    attempts: list[DraftAttempt],
    *,
    failure: str | None = None,
    fixes: Sequence[str] = (),
) -> DraftOutcome:
    """The outcome, with the file text: status in the header, then what code changed in the
    model's answers; issues and coverage appended."""
    if last is None:
        return DraftOutcome(None, False, attempts, [], failure=failure, fixes=list(fixes))
    text, issues, draft = last
    valid = not issues and failure is None
    repairs = _repairs(attempts)
    if valid:
        status = f"Status: validated after {repairs} repair(s)."
    else:
        status = (
            f"Status: DOES NOT VALIDATE after {repairs} repair(s); the errors are listed at "
            "the end of this file."
        )
    lines = text.splitlines()
    lines[1] = f"# {status}"
    if fixes:
        changed = [f"# Changed by code in the model's answers ({len(fixes)}):"]
        lines[2:2] = changed + [f"#   - {fix}" for fix in fixes]
    found = draft_coverage(draft)
    lines += ["", *_coverage_comment(found), *_one_sided(draft)]
    if failure is not None:
        lines += ["", f"# The last ask returned no draft ({failure}); the draft above is the last."]
    if issues:
        lines += ["", f"# ERRORS ({len(issues)}): what the loader and the draft checks found:"]
        lines += [f"# {issue}" for issue in issues]
    text = "\n".join(lines) + "\n"
    return DraftOutcome(text, valid, attempts, issues, found, failure, list(fixes))


def _one_sided(draft: PolicyDraft) -> list[str]:
    """Rule variants that flag every category or none (review information, not an error: a
    qwen violence draft flagged all five categories for adults too, where the text allows
    news and sport; a gambling one flagged nothing where the text flags adverts for all)."""
    lines = []
    for rule in dict.fromkeys(rule_id(r.id) for r in draft.rules):
        flags = [
            ruling.flagged
            for category in draft.categories
            for ruling in category.verdicts
            if rule_id(ruling.rule) == rule
        ]
        if flags and all(flags):
            lines.append(f"# Review: {rule} flags every category ({len(flags)}); nothing is "
                         "allowed for its audience.")  # fmt: skip
        elif flags and not any(flags):
            lines.append(f"# Review: {rule} flags no category ({len(flags)}); nothing is "
                         "forbidden for its audience.")  # fmt: skip
    return lines


def _coverage_comment(found: Coverage) -> list[str]:
    covered = found.products - len(found.uncovered)
    lines = [
        f"# Attribute products (enumerated from the attributes by code): {found.products}; "
        f"covered by a category: {covered}; by none: {len(found.uncovered)}."
    ]
    lines += [f"#   not covered: {render_product(p)}" for p in found.uncovered[:_LIST_UNCOVERED]]
    if len(found.uncovered) > _LIST_UNCOVERED:
        lines.append(f"#   ... and {len(found.uncovered) - _LIST_UNCOVERED} more")
    for conflict in found.conflicts:
        lines.append(f"# Overlapping categories with different verdicts under {conflict}")
    return lines


def _numbered(text: str) -> str:
    return "\n".join(f"{n:>3}| {line}" for n, line in enumerate(text.splitlines(), start=1))
