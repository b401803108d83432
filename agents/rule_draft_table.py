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
rule variant, and the product schema (an ``anyOf``) fixes at least one attribute. What the
model still gets wrong in the table and code can decide mechanically, `tidy_table` does and
says so (a product of wildcards only, a product given twice, a name used twice); the loader
checks everything else. The verdict table's completeness is the schema's, not the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

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
    ``r0``); the names the model sees and writes are the outline's, as aliases.

    A product must fix at least one attribute. JSON schema's ``not`` is not something
    llama.cpp's grammar converter accepts, ``anyOf`` is: the product is one of N shapes, the
    n-th fixing attribute n first (the attributes before it are the wildcard, those after it a
    value or the wildcard). The shapes are disjoint, so a grammar follows one at a time, and
    a product of wildcards only matches none of them."""
    names = list(shape.attributes)
    shapes = []
    for first in range(len(names)):
        fields: dict[str, Any] = {}
        for n, name in enumerate(names):
            values = shape.attributes[name]
            if n < first:
                allowed: Any = Literal[shape.wildcard]
            elif n == first:
                allowed = Literal[values]
            else:
                allowed = Literal[(*values, shape.wildcard)]
            description = f"the {name} this category fixes, or {shape.wildcard}"
            fields[f"a{n}"] = (allowed, Field(alias=name, description=description))
        shapes.append(create_model(f"Product{first}", __config__=_CLOSED, **fields))
    product: Any = shapes[0] if len(shapes) == 1 else Union[tuple(shapes)]  # noqa: UP007
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
        product=(
            product,
            Field(
                description=f"one value of every attribute, or {shape.wildcard}; at least "
                "one attribute is not " + shape.wildcard
            ),
        ),
        verdicts=(verdicts, Field(description="a verdict under every rule variant")),
    )
    return create_model(
        "CategoryTable",
        __config__=_CLOSED,
        categories=(list[category], Field(min_length=2, max_length=12)),
    )


Row = dict[str, Any]


def table_rows(table: BaseModel) -> list[Row]:
    """The category table's answer as rows, keyed by the outline's names (the aliases)."""
    rows: list[Row] = table.model_dump(by_alias=True)["categories"]
    return rows


def tidy_table(shape: TableShape, rows: Sequence[Row]) -> tuple[list[Row], list[str]]:
    """The table's rows with what code decides mechanically done, and a sentence per change.

    - a category that fixes no attribute (every attribute the wildcard: a schema that is not
      grammar-constrained lets it through) is not a category: dropped;
    - a category with the same product as an earlier one is the same category: dropped, the
      earlier one's name and verdicts kept (the sentence says where its verdicts differed);
    - a name used again by a category with another product gets ``_2``, ``_3``... .
    Every change is reported, for the draft's comments and its record: nothing is silent."""
    kept: list[Row] = []
    fixes: list[str] = []
    by_product: dict[tuple[tuple[str, str], ...], Row] = {}
    names: set[str] = set()
    for row in rows:
        name = identifier(row["name"]) or "category"
        fixed = tuple((a, v) for a, v in row["product"].items() if v != shape.wildcard)
        if not fixed:
            fixes.append(
                f"dropped category '{name}': it fixes no attribute (every attribute is "
                f"'{shape.wildcard}')"
            )
            continue
        if fixed in by_product:
            first = by_product[fixed]
            differ = [
                rule
                for rule, ruling in row["verdicts"].items()
                if ruling["flagged"] != first["verdicts"].get(rule, {}).get("flagged")
            ]
            note = f"; its verdicts differed under {', '.join(differ)}" if differ else ""
            fixes.append(
                f"dropped category '{name}': the same product ({_product_text(fixed)}) as "
                f"category '{first['name']}', whose verdicts are kept{note}"
            )
            continue
        unique = name
        n = 2
        while unique in names:
            unique, n = f"{name}_{n}", n + 1
        if unique != name:
            fixes.append(
                f"renamed category '{name}' ({_product_text(fixed)}) to '{unique}': the name "
                "was taken by an earlier category with another product"
            )
        row = row | {"name": unique}
        names.add(unique)
        by_product[fixed] = row
        kept.append(row)
    return kept, fixes


def _product_text(fixed: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{a}={v}" for a, v in fixed)


def assemble(outline: PolicyOutline, shape: TableShape, rows: Sequence[Row]) -> PolicyDraft:
    """The outline and the (tidied) table rows as one draft, for the policy file and its
    checks. Built without validation: whatever is still wrong is the loader's to report in
    the file, not an exception's to lose the draft."""
    categories = []
    for row in rows:
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


def table_issues(rows: Sequence[Row], dropped: int) -> list[str]:
    """What is still wrong with a tidied category table in its own terms, for the repair ask
    (the demo's model, shown the loader's errors about the policy file instead, answered with
    20 errors where it had 1): too few categories once code dropped those that were not."""
    if len(rows) >= 2:
        return []
    return [
        f"only {len(rows)} category is left once the {dropped} that fixed no attribute or "
        "repeated another's values were dropped; write at least two categories, each with "
        "its own values, at least one attribute not 'any'"
    ]


def rules_summary(outline: PolicyOutline) -> Sequence[str]:
    """One line per rule variant, as the second ask shows them."""
    return [
        f"- {rule_id(r.id)}: {r.age_group} / {r.culture}: {r.description}" for r in outline.rules
    ]
