"""The rule drafter's second ask: the category table, in a schema code builds from the outline.

A draft asked for in one answer leaves the model to keep its own names straight: the first
draft the offline model (qwen2.5-1.5b) ever finished used category names as attribute values
('board_games' for the attribute object), ruled on some categories under some rule variants
only, and named one attribute twice in a product; after two repairs it still had 18 errors.

Asked in two steps, the second answer cannot make those mistakes: once the outline (term,
attributes with their values, rule variants) is known, the table's schema is built from it.
Each category's product is an object with one field per attribute whose value is one of that
attribute's values or the wildcard (the category does not fix it), and its verdicts an object
with one required field per rule variant. Grammar-constrained decoding (llama.cpp) and strict
structured output (OpenAI) then give a known value for every attribute and a verdict for every
rule variant; the loader still checks everything else (duplicate categories and products,
names). The verdict table's completeness is the schema's, not the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from agents.rule_draft_policy import identifier, rule_id
from agents.rule_draft_schema import (
    DraftCategory,
    DraftProductPart,
    DraftRuling,
    Name,
    PolicyDraft,
    PolicyOutline,
    Sentence,
)

#: a product field's value when the category does not fix that attribute
WILDCARD = "any"

_CLOSED = ConfigDict(extra="forbid")
_CATEGORY_SENTENCE = "one sentence: 'It is known that the image shows ...'"


@dataclass(frozen=True)
class TableShape:
    """What the category table's schema is built from: the outline's identifiers."""

    attributes: dict[str, tuple[str, ...]]
    rules: tuple[str, ...]
    wildcard: str

    def attribute_lines(self) -> list[str]:
        """The attributes as the second ask shows them, one line each."""
        return [
            f"- {name}: {', '.join(values)} (or {self.wildcard})"
            for name, values in self.attributes.items()
        ]


def table_shape(outline: PolicyOutline) -> TableShape:
    """The identifiers the policy file will use (the same ``identifier`` everywhere). The
    wildcard is ``any`` unless an attribute has a value of that name."""
    attributes = {
        identifier(a.name): tuple(dict.fromkeys(identifier(v.name) for v in a.values))
        for a in outline.attributes
    }
    taken = {v for values in attributes.values() for v in values}
    wildcard = WILDCARD if WILDCARD not in taken else f"{WILDCARD}_value"
    rules = tuple(dict.fromkeys(rule_id(r.id) for r in outline.rules))
    return TableShape(attributes, rules, wildcard)


def category_table_model(shape: TableShape) -> type[BaseModel]:
    """The second ask's schema: 2-12 categories, each fixing a value (or the wildcard) of every
    attribute and ruling under every rule variant. Field names are positional (``a0``,
    ``r0``); the names the model sees and writes are the outline's, as aliases."""
    product_fields: dict[str, Any] = {
        f"a{n}": (
            Literal[(*values, shape.wildcard)],
            Field(alias=name, description=f"the {name} this category fixes, or {shape.wildcard}"),
        )
        for n, (name, values) in enumerate(shape.attributes.items())
    }
    product = create_model("Product", __config__=_CLOSED, **product_fields)
    ruling = create_model(
        "Ruling",
        __config__=_CLOSED,
        flagged=(bool, Field(description="true when the image violates this rule variant")),
        reason=(Sentence, Field(description="one sentence: why, for this audience")),
    )
    verdict_fields: dict[str, Any] = {
        f"r{n}": (ruling, Field(alias=rule)) for n, rule in enumerate(shape.rules)
    }
    verdicts = create_model("Verdicts", __config__=_CLOSED, **verdict_fields)
    category = create_model(
        "Category",
        __config__=_CLOSED,
        name=(Name, Field(description="lower_snake_case category name")),
        description=(Sentence, Field(description=_CATEGORY_SENTENCE)),
        product=(product, Field(description=f"one value of every attribute, or {shape.wildcard}")),
        verdicts=(verdicts, Field(description="a verdict under every rule variant")),
    )
    return create_model(
        "CategoryTable",
        __config__=_CLOSED,
        categories=(list[category], Field(min_length=2, max_length=12)),
    )


def assemble(outline: PolicyOutline, shape: TableShape, table: BaseModel) -> PolicyDraft:
    """The outline and the table as one draft, for the policy file and its checks. Built
    without validation: a category that fixes no attribute keeps an empty product, and the
    loader reports it in the file instead of an exception losing the draft."""
    categories = []
    for row in table.model_dump(by_alias=True)["categories"]:
        parts = [
            DraftProductPart(attribute=attribute, value=value)
            for attribute, value in row["product"].items()
            if value != shape.wildcard
        ]
        rulings = [DraftRuling(rule=rule, **given) for rule, given in row["verdicts"].items()]
        categories.append(
            DraftCategory.model_construct(
                name=row["name"],
                description=row["description"],
                product=parts,
                verdicts=rulings,
            )
        )
    return PolicyDraft.model_construct(
        term=outline.term,
        title=outline.title,
        description=outline.description,
        attributes=list(outline.attributes),
        rules=list(outline.rules),
        categories=categories,
    )


def table_issues(shape: TableShape, table: BaseModel) -> list[str]:
    """What is wrong with a category table in its own terms, for the repair ask: a category
    that fixes no attribute, a name used twice, two categories with the same values. The demo's
    model, shown the loader's errors about the policy file instead (``categories.any.attributes:
    dictionary should have at least 1 item``), answered with 20 errors where it had 1."""
    rows = table.model_dump(by_alias=True)["categories"]
    issues: list[str] = []
    names: dict[str, int] = {}
    products: dict[tuple[tuple[str, str], ...], str] = {}
    for row in rows:
        name = identifier(row["name"])
        names[name] = names.get(name, 0) + 1
        fixed = tuple((a, v) for a, v in row["product"].items() if v != shape.wildcard)
        if not fixed:
            issues.append(
                f"category '{name}': every attribute is '{shape.wildcard}'; set the value of "
                "at least one attribute (or drop the category)"
            )
        elif fixed in products:
            values = ", ".join(f"{a}={v}" for a, v in fixed)
            issues.append(
                f"categories '{products[fixed]}' and '{name}' have the same values ({values}); "
                "change the values of one of them or drop it"
            )
        else:
            products[fixed] = name
    issues += [
        f"category name '{name}' is used {times} times; give each category its own name"
        for name, times in names.items()
        if times > 1
    ]
    return issues


def rules_summary(outline: PolicyOutline) -> Sequence[str]:
    """One line per rule variant, as the second ask shows them."""
    return [
        f"- {rule_id(r.id)}: {r.age_group} / {r.culture}: {r.description}" for r in outline.rules
    ]
