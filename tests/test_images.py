"""The robust image loader: every awkward and every bad input kind, and batches that carry on.

All inputs are built in the test (no model is loaded), so this file runs in about a second.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.images import (
    CorruptImageError,
    DecompressionBombError,
    EmptyImageError,
    ImageLoadError,
    ImageTooLargeError,
    MissingImageError,
    NotAnImageError,
    TruncatedImageError,
    image_sha256,
    load_image,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with a token of data: a bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------- awkward but valid
def test_rgb_jpeg_loads_with_identity_of_original_bytes(tmp_path: Path) -> None:
    data = _save(Image.new("RGB", (32, 24), RED), "JPEG", quality=95)
    path = _write(tmp_path, "red.jpg", data)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB"
    assert (loaded.width, loaded.height, loaded.format) == (32, 24, "JPEG")
    assert loaded.sha256 == hashlib.sha256(data).hexdigest() == image_sha256(path)
    assert loaded.size_bytes == len(data)
    assert loaded.path == str(path)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored landscape 40x20 with a red top-left corner; orientation 6 = rotate 90 degrees
    # clockwise to display, so the viewer sees portrait 20x40 with red at the top-right.
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _write(tmp_path, "rotated.jpg", _save(stored, "JPEG", quality=95, exif=exif.tobytes()))
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == (20, 40)
    top_right = np.asarray(loaded.image)[2, 17]
    top_left = np.asarray(loaded.image)[2, 2]
    assert top_right[0] > 200 and top_right[2] < 60
    assert top_left[2] > 200
    assert any("EXIF orientation 6" in note for note in loaded.notes)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta+yellow = red
    loaded = load_image(_write(tmp_path, "print.jpg", _save(cmyk, "JPEG", quality=95)))
    assert loaded.source_mode == "CMYK"
    red, green, blue = np.asarray(loaded.image)[8, 8]
    assert red > 200 and green < 60 and blue < 60
    assert "CMYK converted to RGB" in loaded.notes


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = _write(tmp_path, "scan.png", _save(Image.fromarray(ramp), "PNG"))
    loaded = load_image(path)
    assert loaded.source_mode.startswith("I")
    assert loaded.image.mode == "RGB"
    assert list(np.asarray(loaded.image)[0, :, 0]) == [0, 64, 128, 255]


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (0, 0, 4, 8))  # left half red, right half index 0 (black, transparent)
    path = _write(tmp_path, "sticker.png", _save(image, "PNG", transparency=0))
    pixels = np.asarray(load_image(path).image)
    assert tuple(pixels[4, 1]) == RED
    assert tuple(pixels[4, 6]) == (255, 255, 255)


def test_alpha_channel_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 4, 8))
    loaded = load_image(_write(tmp_path, "logo.png", _save(rgba, "PNG")))
    pixels = np.asarray(loaded.image)
    assert tuple(pixels[4, 1]) == BLUE
    assert tuple(pixels[4, 6]) == (255, 255, 255)
    assert "transparency composited on white" in loaded.notes


def test_grayscale_becomes_three_channels(tmp_path: Path) -> None:
    loaded = load_image(_write(tmp_path, "gray.png", _save(Image.new("L", (5, 5), 77), "PNG")))
    assert loaded.image.mode == "RGB"
    assert tuple(np.asarray(loaded.image)[2, 2]) == (77, 77, 77)


def test_animated_gif_keeps_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), color) for color in (RED, BLUE, (0, 255, 0))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    loaded = load_image(_write(tmp_path, "anim.gif", data))
    assert loaded.frames == 3
    assert tuple(np.asarray(loaded.image)[5, 5]) == RED
    assert "first of 3 frames kept" in loaded.notes


def test_bytes_input_is_named_in_errors() -> None:
    loaded = load_image(_save(Image.new("RGB", (4, 4)), "PNG"))
    assert loaded.path == "<bytes>"
    with pytest.raises(NotAnImageError, match=r"^upload-7: "):
        load_image(b"plain text", name="upload-7")


# ---------------------------------------------------------------------- bad inputs
def _truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = _save(Image.fromarray(noise), "JPEG", quality=90)
    return data[: len(data) // 2]


def _corrupt_png() -> bytes:
    data = bytearray(_save(Image.new("RGB", (32, 32), RED), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start : start + 8] = b"\xde\xad\xbe\xef" * 2  # garbage in the compressed stream
    return bytes(data)


BAD_INPUTS = {
    "truncated.jpg": (_truncated_jpeg, TruncatedImageError),
    "corrupt.png": (_corrupt_png, CorruptImageError),
    "empty.jpg": (lambda: b"", EmptyImageError),
    "notes.jpg": (lambda: b"Meeting notes: bring the slides.\n", NotAnImageError),
    "page.png": (lambda: b"<!DOCTYPE html><html><body>404</body></html>", NotAnImageError),
    "bomb.png": (lambda: _png_header_only(100_000, 100_000), DecompressionBombError),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_typed_error_naming_the_file(tmp_path: Path, name: str) -> None:
    make, expected = BAD_INPUTS[name]
    path = _write(tmp_path, name, make())
    with pytest.raises(expected) as caught:
        load_image(path)
    error = caught.value
    assert isinstance(error, ImageLoadError)
    assert error.path == str(path)
    assert str(error).startswith(f"{path}: ")
    assert error.reason


def test_text_file_with_image_extension_says_it_is_text(tmp_path: Path) -> None:
    path = _write(tmp_path, "photo.jpg", b"this is not a photo")
    with pytest.raises(NotAnImageError, match="is a text file"):
        load_image(path)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"root:*:20228:0:99999:7:::\ndaemon:*:20228:0:99999:7:::\n", "a text file"),
        (b"SHELL=/bin/bash\x00OPENAI_API_KEY=sk-leak0123456789abcdef\x00", "a binary file"),
        (b"\x7fELF\x02\x01\x01\x00secret-bytes-here", "an ELF binary"),
        (b"#!/bin/sh\nexport TOKEN=hunter2hunter2\n", "a script"),
        (b"%PDF-1.7 confidential", "a PDF document"),
    ],
)
def test_not_an_image_error_names_the_kind_never_the_content(
    tmp_path: Path, content: bytes, kind: str
) -> None:
    """Issue 23: a path to /etc/shadow or /proc/self/environ must not print what it holds."""
    path = _write(tmp_path, "photo.jpg", content)
    with pytest.raises(NotAnImageError) as caught:
        load_image(path)
    message = str(caught.value)
    assert kind in message
    for fragment in (b"root", b"20228", b"SHELL", b"sk-leak", b"secret", b"hunter2", b"confid"):
        assert fragment.decode() not in message.replace(str(path), "")


def test_pixel_limit_is_enforced_before_decoding(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.png", _save(Image.new("L", (2000, 1000)), "PNG"))
    with pytest.raises(DecompressionBombError, match="2,000,000 pixels exceeds the limit"):
        load_image(path, max_pixels=1_000_000)
    assert load_image(path, max_pixels=2_000_000).width == 2000


def test_size_limit_is_enforced_before_reading(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "huge.png", _save(Image.new("RGB", (64, 64), RED), "PNG") + b"\0" * 4096
    )
    with pytest.raises(ImageTooLargeError, match="exceeds the limit of 1,000 bytes"):
        load_image(path, max_bytes=1000)
    with pytest.raises(ImageTooLargeError):
        load_image(path.read_bytes(), max_bytes=1000)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(MissingImageError, match="no such file"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(MissingImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(MissingImageError):
        image_sha256(tmp_path / "absent.jpg")


def test_batch_carries_on_past_bad_files(tmp_path: Path) -> None:
    from agents.perception.toolkit import Toolkit

    good = _write(tmp_path, "good.png", _save(Image.new("RGB", (12, 10), RED), "PNG"))
    sources = [
        good,
        _write(tmp_path, "empty.png", b""),
        _write(tmp_path, "text.jpg", b"hello"),
        tmp_path / "missing.png",
        good,
    ]
    with Toolkit(tools=[]) as toolkit:  # no detectors: the batch logic only
        results = toolkit.perceive_many(sources)
    kinds = [type(r).__name__ for r in results]
    assert kinds == [
        "Evidence",
        "EmptyImageError",
        "NotAnImageError",
        "MissingImageError",
        "Evidence",
    ]
    assert results[0].width == 12 and results[0].image_path == str(good)  # type: ignore[union-attr]
    assert str(sources[2]) in str(results[2])
