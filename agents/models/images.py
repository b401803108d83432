"""Turn an image file or bytes into an :class:`ImageInput` a provider can send.

The identity of an image is the sha256 of its ORIGINAL bytes: cache keys and traces use it, so
the same photo resized for two models is still recognisably the same photo. The media type is
sniffed from the bytes (never trusted from a file extension), and the image is shrunk so its
longest side fits the role's ``image_max_side``: large photos cost tokens and latency for no gain.

Decoding goes through ``data.images.load_image``, the project's one loader for odd files (EXIF
rotation, CMYK, 16-bit, animated, truncated, decompression bombs).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from agents.models.base import ImageInput, Message
from data.images import ImageLoadError, load_image

#: formats every provider accepts as-is (Pillow format name -> media type)
_SENDABLE = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


ImageError = ImageLoadError
"""Kept as the model layer's name for an unreadable image (same class as ``data.images``)."""


def _encode(image: Image.Image) -> tuple[bytes, str]:
    """Re-encode as JPEG: ``load_image`` has already flattened alpha and converted to RGB."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "image/jpeg"


def prepare_image(source: str | Path | bytes, max_side: int = 1024) -> ImageInput:
    """Load (through the project's one robust loader), then resize if needed.

    The original bytes are sent untouched when every provider takes the format, the image
    already fits ``max_side``, and loading changed nothing (no EXIF rotation, no CMYK or
    16-bit conversion, no extra frames); otherwise the upright RGB image is resized (aspect
    kept) and re-encoded. Unreadable input raises :class:`data.images.ImageLoadError`, which
    names the file.
    """
    loaded = load_image(source)
    width, height = loaded.width, loaded.height
    if loaded.format in _SENDABLE and max(width, height) <= max_side and not loaded.notes:
        data = loaded.data  # the bytes just decoded: the file is read once
        return ImageInput(
            sha256=loaded.sha256,
            media_type=_SENDABLE[loaded.format],
            data=data,
            width=width,
            height=height,
        )
    image = loaded.image
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    encoded, media_type = _encode(image)
    return ImageInput(
        sha256=loaded.sha256,
        media_type=media_type,
        data=encoded,
        width=image.width,
        height=image.height,
    )


def image_placeholder(image: ImageInput) -> dict[str, object]:
    """How an image appears in cache keys and traces: its identity and sent size, no bytes."""
    return {
        "image_sha256": image.sha256,
        "media_type": image.media_type,
        "width": image.width,
        "height": image.height,
    }


#: the trace's ``image_mode`` of an attempt asked again without its images because the endpoint
#: answered that its model takes none (``send_images=auto``)
IMAGE_MODE_TEXT_RETRY = "text-only retry (endpoint takes no images)"


def without_images(messages: list[Message]) -> list[Message]:
    """The messages with their images dropped (text unchanged)."""
    return [Message(m.role, m.text) if m.images else m for m in messages]


#: smaller copies remembered for roles with a lower ``image_max_side`` (bounded: long runs)
RESIZED_MEMO_LIMIT = 256


def fit_images(
    messages: list[Message],
    supports_images: bool,
    max_side: int,
    memo: dict[tuple[str, int], ImageInput],
) -> tuple[list[Message], str]:
    """Messages as a model gets them, and the trace's ``image_mode``.

    A text-only model gets none (``none (text-only model)``); otherwise images larger than the
    role's ``max_side`` are shrunk once per (image, side) and remembered in ``memo``.
    """
    if not any(m.images for m in messages):
        return messages, "none"
    if not supports_images:
        return [Message(m.role, m.text) for m in messages], "none (text-only model)"
    out = []
    for m in messages:
        if m.images:
            fitted = []
            for image in m.images:
                if max(image.width, image.height) > max_side:
                    key = (image.sha256, max_side)
                    if key not in memo:
                        if len(memo) >= RESIZED_MEMO_LIMIT:  # a run sees each image briefly
                            memo.clear()
                        memo[key] = resized(image, max_side)
                    image = memo[key]
                fitted.append(image)
            m = Message(m.role, m.text, tuple(fitted), images_first=m.images_first)
        out.append(m)
    return out, "native"


def resized(image: ImageInput, max_side: int) -> ImageInput:
    """Shrink an already prepared image further for a role with a smaller ``image_max_side``."""
    if max(image.width, image.height) <= max_side:
        return image
    smaller = prepare_image(image.data, max_side)
    return ImageInput(
        sha256=image.sha256,
        media_type=smaller.media_type,
        data=smaller.data,
        width=smaller.width,
        height=smaller.height,
    )
