"""One way for every generation role to ask its model: render the role's two templates
(``<role>.system`` and ``<role>.user``), attach images to the user message, call the layer.

Keeping this in one place means every call carries the same trace fields (both template ids and
hashes, sample, stage, attempt) whatever the role.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from agents.models.base import ImageInput, Message
from agents.models.result import CallResult
from prompts import PromptTemplate, load_prompt

T = TypeVar("T", bound=BaseModel)


class LayerLike(Protocol):
    """What a role needs of the model layer; ``agents.models.ModelLayer`` is one, and tests
    pass a scripted one (no HTTP)."""

    async def call(
        self,
        *,
        role: str,
        schema: type[T],
        messages: list[Message],
        prompt: PromptTemplate | Sequence[PromptTemplate] | None = None,
        sample_id: str | None = None,
        stage: str | None = None,
        attempt: int = 1,
    ) -> CallResult[T]: ...

    async def sees_images(self, role: str) -> bool: ...


def role_templates(role: str) -> tuple[PromptTemplate, PromptTemplate]:
    return load_prompt(f"{role}.system"), load_prompt(f"{role}.user")


async def ask_role(
    layer: LayerLike,
    *,
    role: str,
    schema: type[T],
    variables: dict[str, Any],
    images: Sequence[ImageInput] = (),
    sample_id: str | None,
    stage: str,
    attempt: int,
    one_message: bool = False,
) -> CallResult[T]:
    """Render ``role``'s templates with ``variables`` and ask the model bound to ``role``.

    ``one_message``: no system message; its text opens the one user message, whose images
    come before the text (the request the paper's release builds for its image call)."""
    system, user = role_templates(role)

    def built(values: dict[str, Any], with_images: Sequence[ImageInput]) -> list[Message]:
        if one_message:
            text = f"{system.render(**values)}\n\n{user.render(**values)}"
            return [Message("user", text, tuple(with_images), images_first=True)]
        return [
            Message(role="system", text=system.render(**values)),
            Message(role="user", text=user.render(**values), images=tuple(with_images)),
        ]

    messages = built(variables, images)
    extra: dict[str, Any] = {}
    if images and variables.get("has_image"):
        # what the layer sends instead if the endpoint answers that its model takes no images:
        # the prompt for a model that cannot see (it leans on the detector evidence), rendered
        # only if that happens
        blind = {**variables, "has_image": False}
        extra["text_only"] = lambda: built(blind, ())
    return await layer.call(
        role=role,
        schema=schema,
        messages=messages,
        prompt=[system, user],
        sample_id=sample_id,
        stage=stage,
        attempt=attempt,
        **extra,
    )
