"""Turn an image file or bytes into an :class:`ImageInput` a provider can send.

The identity of an image is the sha256 of its ORIGINAL bytes: cache keys and traces use it, so
the same photo resized for two models is still recognisably the same photo. The media type is
sniffed from the bytes (never trusted from a file extension), and the image is shrunk so its
longest side fits the role's ``image_max_side``: large photos cost tokens and latency for no gain.

Kept deliberately small; robust loading of odd files (EXIF rotation, CMYK, animated GIFs) lives
in ``agents/perception``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from agents.models.base import ImageInput, Message

#: formats every provider accepts as-is (Pillow format name -> media type)
_SENDABLE = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


class ImageError(ValueError):
    """The bytes are not an image Pillow can read."""


def _encode(image: Image.Image) -> tuple[bytes, str]:
    """Re-encode as PNG when there is transparency or a palette, else as JPEG (smaller)."""
    buffer = io.BytesIO()
    if image.mode in ("RGBA", "LA", "P", "1"):
        image.save(buffer, format="PNG", optimize=False)
        return buffer.getvalue(), "image/png"
    if image.mode != "RGB":
        image = image.convert("RGB")
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "image/jpeg"


def prepare_image(source: str | Path | bytes, max_side: int = 1024) -> ImageInput:
    """Load, sniff, and (if needed) resize an image.

    Bytes are passed through untouched when the format is one every provider takes and the image
    already fits ``max_side``; otherwise the image is resized (aspect kept) and re-encoded.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        name = "bytes" if isinstance(source, bytes) else str(source)
        raise ImageError(f"not a readable image: {name} ({exc})") from exc
    width, height = image.size
    fmt = image.format or ""
    if (
        fmt in _SENDABLE
        and max(width, height) <= max_side
        and not getattr(image, "is_animated", False)
    ):
        return ImageInput(
            sha256=digest, media_type=_SENDABLE[fmt], data=data, width=width, height=height
        )
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    encoded, media_type = _encode(image)
    return ImageInput(
        sha256=digest, media_type=media_type, data=encoded, width=image.width, height=image.height
    )


def image_placeholder(image: ImageInput) -> dict[str, object]:
    """How an image appears in cache keys and traces: its identity and sent size, no bytes."""
    return {
        "image_sha256": image.sha256,
        "media_type": image.media_type,
        "width": image.width,
        "height": image.height,
    }


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
                        memo[key] = resized(image, max_side)
                    image = memo[key]
                fitted.append(image)
            m = Message(m.role, m.text, tuple(fitted))
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
