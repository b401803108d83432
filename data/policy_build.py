"""Check a parsed policy file and build the `Policy`, collecting every issue with its line.

Two layers of checks run side by side so that one mistake never hides another:
- shape: each section entry (verdict label, attribute, category, rule variant) is validated on
  its own by the pydantic models, so a broken category does not stop the others being checked;
- meaning: cross-references are checked on the raw data, defensively, whatever the shape layer
  said: attributes and values exist, categories are distinct attribute products, every rule
  variant rules exactly once on every category with one of the policy's own verdict labels.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from data.policy_models import (
    Attribute,
    AttributeEntry,
    Category,
    Policy,
    PolicyDocument,
    PolicyIssue,
    RuleVariant,
    Verdict,
)
from data.yaml_lines import KeyPath, LocatedYaml, format_path

_ENTRY_MODELS: dict[str, type[BaseModel]] = {
    "verdicts": Verdict,
    "attributes": AttributeEntry,
    "categories": Category,
    "rules": RuleVariant,
}


class _Collector:
    """Turns problems into located `PolicyIssue`s for one file."""

    def __init__(self, doc: LocatedYaml, file: str) -> None:
        self.doc = doc
        self.file = file
        self.issues: list[PolicyIssue] = []

    def add(self, path: KeyPath, message: str, line: int | None = None) -> None:
        self.issues.append(
            PolicyIssue(
                file=self.file,
                line=line if line is not None else self.doc.line_of(path),
                field=format_path(path) or "(document)",
                message=message,
            )
        )

    def validate(self, model: type[BaseModel], data: object, path: KeyPath) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                if loc and loc[-1] == "[key]":  # the key itself is wrong, not its value
                    loc = loc[:-1]
                full = (*path, *loc)
                self.add(full, _pydantic_message(model, loc, error, full))
            return None


def build_policy(
    doc: LocatedYaml, *, file: str, name: str, path: Path | None, sha256: str
) -> tuple[Policy | None, list[PolicyIssue]]:
    """Check everything in `doc`; return the policy when there is nothing to report."""
    out = _Collector(doc, file)
    for problem in doc.problems:
        out.add(problem.path, problem.message, problem.line)
    data = doc.data
    if data is None:
        out.add((), "the file is empty; a policy is a mapping of fields")
        return None, _sorted(out.issues)
    if not isinstance(data, dict):
        out.add((), f"a policy is a mapping of fields, got {type(data).__name__}")
        return None, _sorted(out.issues)

    out.validate(PolicyDocument, data, ())
    sections = {key: data.get(key) for key in ("verdicts", "attributes", "categories", "rules")}
    for key, body in sections.items():
        if isinstance(body, dict):
            for entry, value in body.items():
                out.validate(_ENTRY_MODELS[key], value, (key, entry))
    _check_verdict_labels(out, sections["verdicts"], data.get("term"))
    _check_categories(out, sections["attributes"], sections["categories"])
    _check_rules(out, sections["verdicts"], sections["categories"], sections["rules"])
    base_rule = data.get("base_rule")
    rules = sections["rules"]
    if isinstance(base_rule, str) and isinstance(rules, dict) and base_rule not in rules:
        out.add(("base_rule",), _unknown("rule variant", base_rule, rules))

    if out.issues:
        return None, _sorted(out.issues)
    policy = Policy.model_validate(
        {
            "name": name,
            "path": path,
            "sha256": sha256,
            "title": data["title"],
            "term": data["term"],
            "description": data["description"],
            "base_rule": data.get("base_rule"),
            "notes": data.get("notes"),
            **sections,
            "attributes": _attributes(sections["attributes"]),
        }
    )
    return policy, []


def _attributes(section: object) -> dict[str, Attribute]:
    """The attributes section (already checked) as `Attribute`s: value descriptions and their
    synonyms apart, so `values` stays value name -> description for every reader."""
    assert isinstance(section, dict)
    return {
        name: Attribute.from_entry(AttributeEntry.model_validate(body))
        for name, body in section.items()
    }


def _check_verdict_labels(out: _Collector, verdicts: object, term: object) -> None:
    """The policy's question needs at least one "yes" label and at least one "no" label."""
    if not isinstance(verdicts, dict) or not verdicts:
        return
    flags = [v.get("flagged") if isinstance(v, dict) else None for v in verdicts.values()]
    if not all(isinstance(flag, bool) for flag in flags):
        return  # the shape layer already reported it
    question = f"'Is the image {term}?'" if isinstance(term, str) else "the policy's question"
    if not any(flags):
        out.add(("verdicts",), f"no label is flagged: mark the one(s) answering yes to {question}")
    if all(flags):
        out.add(("verdicts",), f"every label is flagged: one must answer no to {question}")


def _check_categories(out: _Collector, attributes: object, categories: object) -> None:
    """Referenced attributes and values exist; no two categories are the same product."""
    if not isinstance(categories, dict):
        return
    known = _attribute_values(attributes)
    seen: dict[frozenset[tuple[str, str]], str] = {}
    for key, body in categories.items():
        fixed = body.get("attributes") if isinstance(body, dict) else None
        if not isinstance(fixed, dict):
            continue
        product: dict[str, str] = {}
        for attribute, value in fixed.items():
            path = ("categories", key, "attributes", attribute)
            if not isinstance(value, str):
                continue  # the shape layer reports lists ("at most one value") and other types
            product[attribute] = value
            if known is None:
                continue
            if attribute not in known:
                out.add(path, _unknown("attribute", attribute, known, list_all=True))
            elif (values := known[attribute]) is not None and value not in values:
                out.add(path, _unknown("value", value, values, list_all=True))
        if len(product) != len(fixed) or not product:
            continue
        signature = frozenset(product.items())
        if signature in seen:
            other = seen[signature]
            other_line = out.doc.line_of(("categories", other))
            out.add(
                ("categories", key, "attributes"),
                f"same attribute product as category '{other}' (line {other_line}): "
                f"{_render_product(product)}; each category must be a distinct product",
            )
        else:
            seen[signature] = key


def _check_rules(out: _Collector, verdicts: object, categories: object, rules: object) -> None:
    """Every rule variant gives every category exactly one verdict, from the policy's labels."""
    if not isinstance(rules, dict):
        return
    labels = list(verdicts) if isinstance(verdicts, dict) else None
    category_keys = list(categories) if isinstance(categories, dict) else None
    for rule_id, body in rules.items():
        rulings = body.get("verdicts") if isinstance(body, dict) else None
        if not isinstance(rulings, dict):
            continue
        path = ("rules", rule_id, "verdicts")
        for key, ruling in rulings.items():
            if category_keys is not None and key not in category_keys:
                out.add((*path, key), _unknown("category", key, category_keys))
            label = ruling.get("verdict") if isinstance(ruling, dict) else None
            if labels is not None and isinstance(label, str) and label not in labels:
                out.add((*path, key, "verdict"), _unknown("verdict label", label, labels, True))
        for key in category_keys or []:
            if key not in rulings:
                out.add(
                    path,
                    f"no verdict for category '{key}': every rule variant must rule on "
                    "every category",
                )


def _attribute_values(attributes: object) -> dict[str, list[str] | None] | None:
    """Attribute -> its value names (None when that attribute is itself malformed)."""
    if not isinstance(attributes, dict):
        return None
    known: dict[str, list[str] | None] = {}
    for name, body in attributes.items():
        values = body.get("values") if isinstance(body, dict) else None
        known[name] = list(values) if isinstance(values, dict) else None
    return known


def _unknown(kind: str, name: str, choices: Mapping[str, Any] | list[str], list_all=False) -> str:
    options = [str(choice) for choice in choices]
    if list_all or len(options) <= 8:
        return f"unknown {kind} '{name}' (expected one of: {', '.join(options)})"
    close = difflib.get_close_matches(name, options, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} '{name}' (not one of the {len(options)} defined{hint})"


def _render_product(product: Mapping[str, str]) -> str:
    return ", ".join(f"{attribute}={value}" for attribute, value in sorted(product.items()))


def _pydantic_message(model: type[BaseModel], loc: tuple, error: Any, full: KeyPath) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(model, loc[:-1])
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown field '{loc[-1]}'{hint}"
    is_category_value = len(full) == 4 and full[0] == "categories" and full[2] == "attributes"
    if is_category_value and isinstance(value, list):
        return (
            f"a category fixes at most one value per attribute, got {len(value)}: {value}; "
            "write one category per value"
        )
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if kind.endswith("_type") and not isinstance(value, dict | list):
        message += f" (got {type(value).__name__} {value!r})"
    return message


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model that sits at `loc` inside `model`, for "unknown field" hints."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            current = field.annotation if field else None
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """`Annotated[X, ...]` -> X, `X | None` -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _sorted(issues: list[PolicyIssue]) -> list[PolicyIssue]:
    return sorted(issues, key=lambda issue: issue.line or 0)
