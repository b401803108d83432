"""What the rule drafter must return: a policy decomposition as plain lists of objects.

The shape is deliberately simple (lists of objects, strings, one boolean; no maps with free
keys, no unions) so that every structured-output path can constrain it, llama.cpp's
JSON-schema-to-grammar converter included. Names are free strings here; the drafter turns them
into the policy file's identifiers and the loader checks what came out. The bounds keep a small
model from rambling and a draft reviewable (2-4 attributes of 2-6 values, 4 rule variants,
12 categories; a whole policy is still 1,500-2,500 tokens). The models carry no docstrings: the
JSON schema the model is shown is exactly these fields and their descriptions.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

Name = Annotated[str, Field(min_length=1, max_length=40)]
Sentence = Annotated[str, Field(min_length=1, max_length=200)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DraftValue(_Out):
    name: Name = Field(description="lower_snake_case value name: what the image can show, or none")
    description: Sentence = Field(description="what this value means in an image")
    synonyms: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(
        max_length=6, description="lower-case words a text may use to mention this value"
    )


class DraftAttribute(_Out):
    name: Name = Field(description="lower_snake_case attribute name, e.g. object or setting")
    description: Sentence = Field(description="which aspect of the image this attribute is")
    values: list[DraftValue] = Field(min_length=2, max_length=6)


class DraftRule(_Out):
    id: Annotated[str, Field(min_length=1, max_length=12)] = Field(
        description="rule variant id: R1, R2, ..."
    )
    age_group: Name = Field(description="the audience's age, e.g. under 13 or 13 and over")
    culture: Name = Field(description="the audience's culture or region, e.g. any or open")
    description: Sentence = Field(description="what this rule variant allows and forbids")


class DraftProductPart(_Out):
    attribute: Name
    value: Name


class DraftRuling(_Out):
    rule: Annotated[str, Field(min_length=1, max_length=12)] = Field(
        description="a rule variant id from rules"
    )
    flagged: bool = Field(description="true when the image violates the rule for its audience")
    reason: Sentence = Field(description="one sentence: why this verdict for this audience")


class DraftCategory(_Out):
    name: Name = Field(description="lower_snake_case category name")
    description: Sentence = Field(
        description="one sentence: 'It is known that the image shows ...'"
    )
    product: list[DraftProductPart] = Field(
        min_length=1,
        max_length=4,
        description="the attribute values this category fixes, at most one per attribute",
    )
    verdicts: list[DraftRuling] = Field(
        min_length=1, max_length=4, description="one verdict for every rule variant"
    )


# The first of two asks (``agents.rule_draft_table`` builds the second's schema from it):
# everything but the categories. (No docstrings: they would be shown to the model.)
class PolicyOutline(_Out):
    term: Name = Field(description="the moderation term in 'Is the image <term>?', e.g. sexy")
    title: Annotated[str, Field(min_length=1, max_length=80)]
    description: Annotated[str, Field(min_length=1, max_length=400)] = Field(
        description="what the policy decides and how its categories are built"
    )
    attributes: list[DraftAttribute] = Field(min_length=2, max_length=4)
    rules: list[DraftRule] = Field(min_length=1, max_length=4)


# A whole draft in one answer (``--one-ask``), or the two asks assembled.
class PolicyDraft(PolicyOutline):
    categories: list[DraftCategory] = Field(min_length=2, max_length=12)


def outline_model(audiences: int = 0) -> type[PolicyOutline]:
    """The first ask's schema: exactly one rule variant per audience asked for (``--audiences``),
    or two to four (the rule texts are about audiences that are treated differently, and qwen,
    told that two rule variants must not share an audience, wrote one); two to four attributes
    either way. A subclass, so the answer is still a `PolicyOutline`."""
    low, high = (audiences, audiences) if audiences else (2, 4)
    rules: Any = (list[DraftRule], Field(min_length=low, max_length=high))
    return create_model(f"PolicyOutline{low}to{high}", __base__=PolicyOutline, rules=rules)
