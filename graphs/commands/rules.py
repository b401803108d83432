"""`icm rules`: list the shipped policies, show a policy's product table, check policy files.

`check` prints issues as `file:line: field: message`, one per line on stdout, the way linters
do, so editors and CI can jump to them; it exits 1 when any file has an issue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from data import policy as policies
from data.policy import (
    Policy,
    PolicyError,
    PolicyIssue,
    check_policy,
    list_policies,
    load_policy,
    resolve_policy_path,
)
from data.policy_diff import diff_policies
from graphs.commands.rules_draft import draft_command

app = typer.Typer(
    help="Moderation policies as data: list the shipped ones, show a policy's verdict table, "
    "check policy files for errors, draft one from a rule text, compare two.",
    no_args_is_help=True,
    add_completion=False,
)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for machines instead of a table.")
]


app.command("draft")(draft_command)


@app.command("list")
def list_command(json_output: JsonOption = False) -> None:
    """List the shipped policies with their term and size."""
    rows = []
    failed = False
    for name in list_policies():
        file = resolve_policy_path(name).name
        try:
            policy = load_policy(name)
        except PolicyError as exc:
            failed = True
            rows.append({"name": name, "file": file, "errors": len(exc.errors)})
            continue
        rows.append(
            {
                "name": name,
                "term": policy.term,
                "attributes": len(policy.attributes),
                "categories": len(policy.categories),
                "rules": len(policy.rules),
                "file": file,
            }
        )
    if json_output:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        _print(_list_table(rows))
    if failed:
        raise typer.Exit(1)


@app.command("show")
def show_command(
    policy: Annotated[
        str, typer.Argument(help="A shipped policy name (e.g. icm_sexy) or a path to a YAML file.")
    ],
    rule: Annotated[
        list[str] | None,
        typer.Option(
            "--rule",
            "-r",
            help="Rule variant to show (repeatable); default all. With one, reasons are shown.",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show the product table: every category, its attribute values, its verdict per rule."""
    try:
        loaded = load_policy(policy)
    except PolicyError as exc:
        _echo_issues(exc.errors)
        raise typer.Exit(1) from exc
    rules = list(dict.fromkeys(rule)) if rule else list(loaded.rules)
    unknown = [r for r in rules if r not in loaded.rules]
    if unknown:
        raise typer.BadParameter(
            f"unknown rule variant(s) {', '.join(unknown)} "
            f"(policy '{loaded.name}' has: {', '.join(loaded.rules)})",
            param_hint="--rule",
        )
    if json_output:
        typer.echo(json.dumps(_show_json(loaded, rules), indent=2, ensure_ascii=False))
        return
    _print(_show_table(loaded, rules))


@app.command("check")
def check_command(
    files: Annotated[
        list[str],
        typer.Argument(help="Policy YAML files (or shipped policy names) to validate."),
    ],
) -> None:
    """Validate policy files; print every issue as `file:line: field: message`."""
    total = 0
    bad_files = 0
    for file in files:
        issues = check_policy(file)
        if issues:
            bad_files += 1
            total += len(issues)
            _echo_issues(issues)
            continue
        policy = load_policy(file)
        typer.echo(
            f"{file}: OK ({policy.name}: {len(policy.categories)} categories x "
            f"{len(policy.rules)} rule variants, term '{policy.term}')"
        )
    if total:
        typer.echo(f"{total} issue(s) in {bad_files} of {len(files)} file(s)")
        raise typer.Exit(1)


def _list_table(rows: list[dict]) -> Table:
    title = f"Shipped policies in {_short_path(policies.POLICY_DIR)}"
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    columns = {"name": "name", "term": "term", "attributes": "attrs", "categories": "categories"}
    columns |= {"rules": "rules", "file": "file"}
    for key, header in columns.items():
        numeric = key in ("attributes", "categories", "rules")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        if "errors" in row:
            problem = Text(f"{row['errors']} errors: run `icm rules check`", style="red")
            table.add_row(Text(row["name"]), problem, "", "", "", Text(row["file"]))
        else:
            table.add_row(*(Text(str(row[key])) for key in columns))
    return table


def _print(table: Table) -> None:
    """Fit a terminal; piped or captured output gets the table's full width, never truncated."""
    console = Console()
    if not console.is_terminal:
        natural = Measurement.get(console, console.options.update_width(10_000), table)
        console = Console(width=max(console.width, natural.maximum))
    console.print(table)


def _short_path(path: Path) -> str:
    """Relative to the working directory when under it: short enough for a table cell."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _echo_issues(issues: list[PolicyIssue]) -> None:
    for issue in issues:
        typer.echo(str(issue))


def _show_table(policy: Policy, rules: list[str]) -> Table:
    single = len(rules) == 1
    caption = "; ".join(
        f"{r}: {policy.rules[r].audience.age_group}, {policy.rules[r].audience.culture}"
        for r in rules
    )
    table = Table(title=f"{policy.name}: {policy.question}", caption=caption, box=box.SIMPLE_HEAD)
    table.add_column("category", no_wrap=True)
    table.add_column("attributes", min_width=22, overflow="fold")
    for rule in rules:
        table.add_column(rule, overflow="fold")
    if single:
        table.add_column("reason", overflow="fold")
    for key, category in policy.categories.items():
        attributes = " ".join(f"{name}={value}" for name, value in category.attributes.items())
        cells = [Text(key), Text(attributes)]
        for rule in rules:
            verdict = policy.verdict(key, rule)
            cells.append(Text(verdict, style="bold red" if policy.is_flagged(verdict) else "green"))
        if single:
            cells.append(Text(policy.reason(key, rules[0])))
        table.add_row(*cells)
    return table


def _show_json(policy: Policy, rules: list[str]) -> dict:
    return {
        "policy": policy.name,
        "file": str(policy.path) if policy.path else None,
        "sha256": policy.sha256,
        "term": policy.term,
        "question": policy.question,
        "base_rule": policy.base_rule,
        "verdicts": {label: v.flagged for label, v in policy.verdicts.items()},
        "rules": {
            rule: {
                "age_group": policy.rules[rule].audience.age_group,
                "culture": policy.rules[rule].audience.culture,
                "description": policy.rules[rule].description,
            }
            for rule in rules
        },
        "categories": [
            {
                "category": key,
                "attributes": dict(category.attributes),
                "verdicts": {
                    rule: policy.ruling(key, rule).model_dump()
                    | {"flagged": policy.is_flagged(policy.verdict(key, rule))}
                    for rule in rules
                },
            }
            for key, category in policy.categories.items()
        ],
    }


@app.command("diff")
def diff_command(
    a: Annotated[str, typer.Argument(help="First policy: a shipped name or a YAML path.")],
    b: Annotated[str, typer.Argument(help="Second policy: a shipped name or a YAML path.")],
    json_output: JsonOption = False,
) -> None:
    """Show what differs between two policies: attributes, categories, verdicts per rule.

    Categories are paired by name, then by identical attribute product; verdicts are compared
    as flagged or not, since the two files may word their labels differently."""
    loaded: list[Policy] = []
    for name in (a, b):
        try:
            loaded.append(load_policy(name))
        except PolicyError as exc:
            _echo_issues(exc.errors)
            raise typer.Exit(1) from exc
    found = diff_policies(*loaded)
    if json_output:
        typer.echo(json.dumps(found.as_dict(), indent=2, ensure_ascii=False))
        return
    typer.echo(f"--- {a}\n+++ {b}")
    sections = [("term", found.term), ("attributes", found.attributes)]
    sections += [("categories", found.categories), ("rule variants", found.rules)]
    for title, lines in sections:
        if lines:
            typer.echo(f"{title}:")
            typer.echo("\n".join(f"  {line}" for line in lines))
    for rule, lines in found.verdicts.items():
        compared = len(found.pairs)
        typer.echo(f"verdicts {rule}: {len(lines)} of {compared} paired categories differ")
        if lines:
            typer.echo("\n".join(f"  {line}" for line in lines))
    if found.same:
        typer.echo("no differences")
