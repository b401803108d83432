"""Typed shape of a moderation policy, and the questions the rest of the project asks of it.

A policy is data (DESIGN.md, principle 1): orthogonal attributes, categories that are named
attribute products, the policy's own verdict labels, and rule variants that give every category
a verdict with a reason. These models hold a policy that has already passed every check in
`data.policy_build`; construct them through `data.policy.load_policy`, not by hand.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
_RULE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PHRASE = re.compile(r"^[^\W_](?:[^\W_]|['\- ])*(?<! )$")


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _label(value: str) -> str:
    if not value.strip() or value != value.strip():
        raise ValueError(f"label {value!r} must be non-empty, without surrounding spaces")
    return value


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{value!r} is not a lower_snake_case identifier")
    return value


def _rule_id(value: str) -> str:
    if not _RULE_ID.match(value):
        raise ValueError(f"{value!r} is not a rule id (letters, digits, '_'; e.g. R1)")
    return value


Text = Annotated[str, AfterValidator(_text)]
"""Free text that must say something."""
Label = Annotated[str, AfterValidator(_label)]
"""A verdict label such as `not sexy`: spaces inside are fine, around it they are a typo."""
Identifier = Annotated[str, AfterValidator(_identifier)]
"""Attribute names, attribute values and category keys: they end up in file names and prompts."""
RuleId = Annotated[str, AfterValidator(_rule_id)]
Provenance = Literal["paper", "ours"]
"""`paper`: stated by the ICM-Assistant paper or its released labels; `ours`: decided here."""


class _Model(BaseModel):
    # strict: YAML already gives native types, so "true" for a bool is a mistake, not a bool.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Verdict(_Model):
    """One of the policy's verdict labels."""

    flagged: bool
    """True when this label answers "yes" to the policy's question ("Is the image sexy?")."""
    description: Text


def _phrase(value: str) -> str:
    if not _PHRASE.match(value) or value != value.lower():
        raise ValueError(
            f"{value!r} is not a phrase (lower-case words, digits, spaces, ' and -; "
            "no surrounding spaces)"
        )
    return value


def _distinct(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"synonym {value!r} is listed twice")
        seen.add(value)
    return values


Phrase = Annotated[str, AfterValidator(_phrase)]
"""A synonym: words a text may use to mention an attribute value, e.g. `a person` or `woman`."""


class AttributeValue(_Model):
    """One value of an attribute as written in the policy file: what it means in an image, and
    the words a text may use to mention it (checked by the critic's `attributes_mentioned`).

    The file may give a value as a bare description string (no synonyms) or as a mapping
    ``{description: ..., synonyms: [...]}``; a synonym is matched by its words' lemmas, so
    `woman` also finds `women` and `bare leg` finds `bare legs`.
    """

    description: Text
    synonyms: Annotated[list[Phrase], AfterValidator(_distinct)] | None = None
    """None (the bare-string form, or the field left out): the value's name words count as
    its mention. An empty list: nothing has to be mentioned (e.g. a `none` value)."""

    @model_validator(mode="before")
    @classmethod
    def _bare_description(cls, data: object) -> object:
        return {"description": data} if isinstance(data, str) else data


class AttributeEntry(_Model):
    """An attribute as written in the policy file; the loader turns it into `Attribute`."""

    description: Text
    values: dict[Identifier, AttributeValue] = Field(min_length=1)


class Attribute(_Model):
    """An axis of the attribute space, e.g. `region` with values upper, middle, lower, whole."""

    description: Text
    values: dict[Identifier, Text] = Field(min_length=1)
    """Value name -> what it means in an image."""
    synonyms: dict[Identifier, list[str]] = Field(default_factory=dict)
    """Value name -> the phrases that count as mentioning it, for the values whose entry in
    the file lists `synonyms` (an empty list included)."""

    @classmethod
    def from_entry(cls, entry: AttributeEntry) -> Attribute:
        return cls(
            description=entry.description,
            values={name: value.description for name, value in entry.values.items()},
            synonyms={
                name: list(value.synonyms)
                for name, value in entry.values.items()
                if value.synonyms is not None
            },
        )

    def mentions(self, value: str) -> list[str]:
        """Phrases that count as mentioning ``value``: the policy's synonyms when its entry
        lists them (the author decides, so list the value's own words too; an empty list means
        nothing has to be mentioned), else the words of the value's name (``bite_lip`` -> bite,
        lip; short joiners like ``and`` left out)."""
        if value in self.synonyms:
            return list(self.synonyms[value])
        return [w for w in value.split("_") if len(w) >= 3 and w != "and"]


class Category(_Model):
    """A named attribute product: the attribute values it fixes plus the sentence that seeds
    generation (the paper's "explicit description")."""

    attributes: dict[str, str] = Field(min_length=1)
    """Attribute name -> the one value this category fixes; unfixed attributes are free.
    Names and values are checked against `Policy.attributes` by the loader."""
    description: Text
    display_name: Text | None = None
    """Name the category had where it came from (e.g. the paper's `upper shoulders`)."""
    source: Text | None = None
    """Where `description` came from, e.g. `rule_definition.csv` or `ours`."""


class Audience(_Model):
    """Who the rule variant protects."""

    age_group: Text
    culture: Text


class Ruling(_Model):
    """A rule variant's verdict for one category."""

    verdict: Label
    reason: Text
    provenance: Provenance = "ours"


class RuleVariant(_Model):
    """A complete mapping from every category to a verdict, for one audience."""

    audience: Audience
    description: Text
    verdicts: dict[str, Ruling]
    """Category key -> ruling; the loader checks that the keys are exactly the categories."""


class ProductRow(BaseModel):
    """One cell of the product table: a category under a rule variant."""

    model_config = ConfigDict(frozen=True)

    category: str
    attributes: dict[str, str]
    rule: str
    verdict: str
    flagged: bool
    reason: str
    provenance: Provenance


class PolicyDocument(_Model):
    """The top level of a policy file. Sections are checked entry by entry elsewhere, so one
    broken category does not hide the errors in the others."""

    schema_version: Literal[1]
    title: Text
    term: Text
    """The word in "Is the image <term>?", e.g. `sexy`, `horrifying`, `gambling-related`."""
    description: Text
    base_rule: RuleId | None = None
    """The rule variant that released labels follow, if the policy comes with labelled data."""
    notes: Text | None = None
    verdicts: dict[Label, object] = Field(min_length=2)
    attributes: dict[Identifier, object] = Field(min_length=1)
    categories: dict[Identifier, object] = Field(min_length=1)
    rules: dict[RuleId, object] = Field(min_length=1)


class Policy(_Model):
    """A validated policy. `sha256` is the hash of the file bytes: the policy's identity in runs."""

    name: str
    path: Path | None
    sha256: str
    title: str
    term: str
    description: str
    base_rule: str | None
    notes: str | None
    verdicts: dict[str, Verdict]
    attributes: dict[str, Attribute]
    categories: dict[str, Category]
    rules: dict[str, RuleVariant]

    @property
    def question(self) -> str:
        """The yes/no question the moderation score answers, e.g. "Is the image sexy?"."""
        return f"Is the image {self.term}?"

    @property
    def flagged_labels(self) -> frozenset[str]:
        return frozenset(label for label, v in self.verdicts.items() if v.flagged)

    def is_flagged(self, label: str) -> bool:
        """Whether `label` answers "yes" to `question`; KeyError for a label not in the policy."""
        if label not in self.verdicts:
            raise KeyError(f"{self.name}: unknown verdict label {label!r}")
        return self.verdicts[label].flagged

    def ruling(self, category: str, rule: str) -> Ruling:
        """Verdict, reason and provenance of `category` under rule variant `rule`."""
        if rule not in self.rules:
            raise KeyError(f"{self.name}: unknown rule variant {rule!r} (have {list(self.rules)})")
        if category not in self.categories:
            raise KeyError(
                f"{self.name}: unknown category {category!r} (have {list(self.categories)})"
            )
        return self.rules[rule].verdicts[category]

    def verdict(self, category: str, rule: str) -> str:
        return self.ruling(category, rule).verdict

    def reason(self, category: str, rule: str) -> str:
        return self.ruling(category, rule).reason

    def product_table(self, rules: Sequence[str] | None = None) -> list[ProductRow]:
        """Every category under every requested rule variant (all by default), category-major."""
        chosen = list(self.rules) if rules is None else list(rules)
        for rule in chosen:
            if rule not in self.rules:
                raise KeyError(f"{self.name}: unknown rule variant {rule!r}")
        rows = []
        for key, category in self.categories.items():
            for rule in chosen:
                ruling = self.rules[rule].verdicts[key]
                rows.append(
                    ProductRow(
                        category=key,
                        attributes=dict(category.attributes),
                        rule=rule,
                        verdict=ruling.verdict,
                        flagged=self.verdicts[ruling.verdict].flagged,
                        reason=ruling.reason,
                        provenance=ruling.provenance,
                    )
                )
        return rows


class PolicyIssue(BaseModel):
    """One thing wrong with a policy file, located for a human: `file:line: field: message`."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


class PolicyError(Exception):
    """A policy could not be loaded; `errors` holds every issue found, not just the first."""

    def __init__(self, errors: Sequence[PolicyIssue]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(issue) for issue in self.errors))
