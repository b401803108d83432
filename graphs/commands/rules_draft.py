"""`icm rules draft RULES.txt --model SPEC --out policy.yaml`: a policy from a moderator's words.

The run is recorded in the store (kind ``draft``) and every ask of the model is a traced,
cached call of the ``rule_drafter`` role. The draft is always written, valid or not; when it
does not validate after ``--max-repairs`` repairs the loader's errors are appended to it as YAML
comments, printed, and the command exits 1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from agents.models.credentials import MissingCredentialsError
from agents.models.layer import ModelLayer
from agents.models.settings import ModelConfig, RoleSettings
from agents.rule_draft_policy import Audience, parse_audiences
from agents.rule_drafter import DraftOutcome, draft_policy
from agents.stages import RULE_DRAFTER
from data.provenance import git_revision, package_versions
from data.store import DEFAULT_DB_PATH, Store, StoreError, records
from prompts import load_prompt

#: a whole policy is a long answer, and a small local model writes it slowly: the drafter's
#: defaults (``--setting`` overrides them)
DRAFTER_SETTINGS = RoleSettings(max_tokens=4096, timeout_s=1800.0)


def draft_command(
    rules_file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help="The rule in a moderator's words (UTF-8 text)."
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", help="Model spec of the rule_drafter role (local:..., ...).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the draft policy YAML.")],
    audiences: Annotated[
        str | None,
        typer.Option(
            "--audiences",
            help="The rule variants to write, as 'AGE_GROUP/CULTURE; ...' (e.g. 'under 13/any; "
            "13 and over/conservative'); default: the ones the rule text names.",
        ),
    ] = None,
    max_repairs: Annotated[
        int, typer.Option("--max-repairs", min=0, help="Times the errors go back to the model.")
    ] = 2,
    setting: Annotated[
        list[str],
        typer.Option(
            "--setting", help="KEY=VALUE role setting of the drafter, repeatable (max_tokens=...)."
        ),
    ] = [],  # noqa: B006
    db: Annotated[
        Path, typer.Option("--db", help="DuckDB store to record the run and its calls in.")
    ] = DEFAULT_DB_PATH,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not read the LLM cache.")
    ] = False,
    one_ask: Annotated[
        bool,
        typer.Option(
            "--one-ask",
            help="Ask for the whole policy in one answer (default: two asks, the outline, then "
            "the categories in a schema built from its attributes and rule variants).",
        ),
    ] = False,
) -> None:
    """Draft a policy from a rule text: the model decomposes it into attributes, categories and
    rule variants; the loader checks it; its errors go back to the model for repair."""
    try:
        rule_text = rules_file.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise _fail(f"{rules_file}: cannot read the rule text: {exc}") from exc
    if not rule_text.strip():
        raise _fail(f"{rules_file}: the rule text is empty")
    try:
        wanted = parse_audiences(audiences) if audiences is not None else []
        config = ModelConfig.from_args(
            [f"{RULE_DRAFTER}={model}"],
            [f"{RULE_DRAFTER}.{s}" for s in setting],
            base=DRAFTER_SETTINGS,
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    try:
        store = Store.open(db)
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    with store:
        outcome = _run(store, config, rule_text, rules_file, model, out, wanted, max_repairs,
                       use_cache=not no_cache, one_ask=one_ask)  # fmt: skip
    _report(outcome, out)
    if not outcome.valid:
        raise typer.Exit(1)


def _run(
    store: Store,
    config: ModelConfig,
    rule_text: str,
    rules_file: Path,
    model: str,
    out: Path,
    audiences: list[Audience],
    max_repairs: int,
    *,
    use_cache: bool,
    one_ask: bool,
) -> DraftOutcome:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_id = f"draft-{stamp}-{uuid.uuid4().hex[:6]}"
    templates = [f"{RULE_DRAFTER}.system", f"{RULE_DRAFTER}.user"]
    run_config: dict[str, Any] = {
        "rules_file": str(rules_file),
        "rules_sha256": hashlib.sha256(rule_text.encode("utf-8")).hexdigest(),
        "audiences": [str(a) for a in audiences],
        "max_repairs": max_repairs,
        "asks": "one" if one_ask else "two",
        "out": str(out),
    }
    records.register_run(
        store,
        records.RunRecord(
            run_id=run_id,
            name=run_id,
            kind="draft",
            config=run_config,
            role_bindings={RULE_DRAFTER: config.for_role(RULE_DRAFTER).record()},
            prompt_hashes={t: load_prompt(t).sha256 for t in templates},
            git_revision=git_revision(),
            package_versions=package_versions(),
        ),
    )
    layer = ModelLayer(config, store, run_id=run_id, use_cache=use_cache)
    try:
        layer.check_credentials()
    except MissingCredentialsError as exc:
        records.finish_run(store, run_id, "failed")
        raise _fail(str(exc)) from exc

    def written(outcome: DraftOutcome) -> None:
        if outcome.text is not None:
            _write(out, outcome.text)

    async def ask() -> DraftOutcome:
        try:
            return await draft_policy(
                layer, rule_text=rule_text, file=str(out), source=str(rules_file), spec=model,
                audiences=audiences, max_repairs=max_repairs, on_attempt=written,
                one_ask=one_ask,
            )  # fmt: skip
        finally:
            await layer.aclose()

    try:
        outcome = asyncio.run(ask())
    except BaseException:
        records.finish_run(store, run_id, "failed")
        raise
    written(outcome)
    # the record says what each ask found and what code changed, not only the file
    records.set_run_config(store, run_id, run_config | _summary(outcome))
    records.finish_run(store, run_id, "finished" if outcome.valid else "failed")
    return outcome


def _summary(outcome: DraftOutcome) -> dict[str, Any]:
    return {
        "valid": outcome.valid,
        "repairs": outcome.repairs,
        "attempts": [
            {
                "step": a.step,
                "attempt": a.attempt,
                "status": a.status,
                "call_id": a.call_id,
                "errors": len(a.errors),
                "code_fixes": a.fixes,
            }
            for a in outcome.attempts
        ],
        "code_fixes": list(outcome.fixes),
        "errors_left": len(outcome.errors),
    }


def _write(path: Path, text: str) -> None:
    """Write whole or not at all: a draft that replaces an older one never ends up half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _report(outcome: DraftOutcome, out: Path) -> None:
    for attempt in outcome.attempts:
        found = "valid" if attempt.status == "ok" and not attempt.errors else None
        found = found or (
            f"{len(attempt.errors)} error(s)" if attempt.status == "ok" else attempt.errors[0]
        )
        step = "" if attempt.step == "policy" else f" ({attempt.step})"
        fixed = f", {len(attempt.fixes)} fixed by code" if attempt.fixes else ""
        typer.echo(
            f"attempt {attempt.attempt}{step}: {found}{fixed} (call {attempt.call_id})", err=True
        )
    for fix in outcome.fixes:
        typer.echo(f"changed by code: {fix}", err=True)
    if outcome.coverage is not None:
        c = outcome.coverage
        typer.echo(
            f"attribute products: {c.products}, not covered by a category: {len(c.uncovered)}, "
            f"overlaps with different verdicts: {len(c.conflicts)}",
            err=True,
        )
    if outcome.text is None:
        typer.echo(f"no draft written: {outcome.failure}", err=True)
        return
    if outcome.valid:
        typer.echo(
            f"{out}: valid after {outcome.repairs} repair(s); review it with `icm rules show {out}`"
        )
        return
    for issue in outcome.errors:
        typer.echo(str(issue))
    reason = outcome.failure or f"{len(outcome.errors)} error(s) left"
    typer.echo(f"{out}: DOES NOT VALIDATE ({reason}); the errors are at the end of the file")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)
