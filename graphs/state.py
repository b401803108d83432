"""The state one sample carries through the generation graph (one LangGraph thread per sample).

Nodes return partial updates; every key is replaced, never merged, so nodes copy the dicts they
change (``attempts``, ``feedback``, ``explanations``) before returning them. The stage outputs
(``description`` ... ``qa_rule``) are those the registered stages declare in ``writes``
(``agents.stages``); a sample starts with their not-yet-run values.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict

from agents.stages import Target

SampleStatus = Literal["pending", "accepted", "rejected", "failed"]


class SampleSpec(BaseModel):
    """What the runner knows about a sample before the graph starts."""

    model_config = ConfigDict(frozen=True)

    sample_id: str
    run_id: str
    policy: str
    rules: tuple[str, ...]
    image_path: str | None = None
    image_sha256: str | None = None
    category: str | None = None
    """The short annotation (attribute product); None when the describer must propose one."""
    category_source: Literal["annotation", "proposed", "dataset"] = "annotation"
    note: str | None = None
    """What a person who saw the image noted it shows (the manifest's ``note``)."""
    given_description: str | None = None
    """Text-only mode: a description that already exists; the vision stages are skipped."""
    source: str | None = None
    split: str | None = None


class SampleState(TypedDict, total=False):
    sample: SampleSpec
    evidence_text: str | None
    evidence: dict[str, Any] | None
    category: str | None
    category_source: str
    description: str | None
    key_elements: list[str]
    context: str | None
    explanations: dict[str, dict[str, str]]
    """rule -> {"explanation" (argument + the conclusion written by code), "argument" (the
    model's text), "verdict", "verdict_source" ("rule_table", or "model" for a proposed
    category), "expected" (the table's verdict), "question"}"""
    qa: dict[str, Any] | None
    qa_rule: str | None
    attempts: dict[str, int]
    feedback: dict[Target, str]
    """(stage, rule variant or None) -> the critic's feedback for that stage's next attempt"""
    next_stage: str | None
    status: SampleStatus
    reasons: list[str]
    tokens: int
    cost_usd: float
