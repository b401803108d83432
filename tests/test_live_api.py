"""Live calls to the hosted APIs, skipped unless their keys are set. They cost a few cents.

Run with ``OPENAI_API_KEY=... ANTHROPIC_API_KEY=... pytest -m live tests/test_live_api.py``.
Models can be changed with ``ICM_LIVE_OPENAI_MODEL`` / ``ICM_LIVE_ANTHROPIC_MODEL``.
"""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Literal

import pytest
from PIL import Image, ImageDraw
from pydantic import BaseModel, Field

from agents.models import Message, ModelConfig, ModelLayer, prepare_image
from data.store import Store

pytestmark = pytest.mark.live


class ShapeAnswer(BaseModel):
    """What the picture shows."""

    shape: Literal["circle", "square", "triangle"]
    color: str = Field(description="the shape's colour, one word")


def _red_circle() -> bytes:
    image = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(image).ellipse((48, 48, 208, 208), fill="red")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


LIVE = [
    pytest.param(
        "openai:" + os.environ.get("ICM_LIVE_OPENAI_MODEL", "gpt-4o-mini"),
        marks=pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="no OPENAI_API_KEY"),
        id="openai",
    ),
    pytest.param(
        "anthropic:" + os.environ.get("ICM_LIVE_ANTHROPIC_MODEL", "claude-haiku-4-5"),
        marks=pytest.mark.skipif(
            not os.environ.get("ANTHROPIC_API_KEY"), reason="no ANTHROPIC_API_KEY"
        ),
        id="anthropic",
    ),
]


@pytest.mark.parametrize("spec", LIVE)
def test_live_structured_output_with_an_image_then_a_cache_hit(spec: str, tmp_path: Path):
    image = prepare_image(_red_circle(), max_side=256)
    messages = [
        Message("system", "You describe simple pictures."),
        Message("user", "Which shape is drawn, and in which colour?", (image,)),
    ]
    config = ModelConfig.from_args([f"describer={spec}"], ["describer.max_tokens=200"])
    with Store.open(tmp_path / "live.duckdb") as store:
        layer = ModelLayer(config, store, run_id="live")
        layer.check_credentials()

        async def twice():
            first = await layer.call(role="describer", schema=ShapeAnswer, messages=messages)
            second = await layer.call(role="describer", schema=ShapeAnswer, messages=messages)
            return first, second

        first, second = asyncio.run(twice())
        layer.close()
        rows = store.rows("SELECT status, cost_usd, input_tokens FROM llm_calls")
    assert first.status == "ok", (first.error, first.raw_text)
    assert first.value.shape == "circle" and first.value.color.lower() == "red"
    assert first.input_tokens and first.cost_usd and first.cost_usd > 0
    assert second.cache_hit and second.value == first.value
    assert [r["status"] for r in rows] == ["ok", "ok"]
