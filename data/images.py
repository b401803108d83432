"""The one robust image loader of the project: every image any part of the system reads comes
through :func:`load_image`.

Images come from the wild: phone photos that store their rotation in EXIF, print files in CMYK,
16-bit scans, palette GIFs with transparency, animations, half-downloaded files, HTML error pages
saved as ``.jpg``, and decompression bombs (a tiny file that expands to gigapixels). Handling
them once, here, means detectors, describers and exports all see the same upright 8-bit RGB
picture, and every bad input fails the same way: a typed :class:`ImageLoadError` that names the
file, so a batch can report it and carry on with the rest.

The identity of an image is the sha256 of its ORIGINAL bytes (before any conversion), the same
key the store and the model layer use.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "CorruptImageError",
    "DecompressionBombError",
    "EmptyImageError",
    "ImageLoadError",
    "ImageTooLargeError",
    "LoadedImage",
    "MissingImageError",
    "NotAnImageError",
    "TruncatedImageError",
    "image_sha256",
    "load_image",
]

DEFAULT_MAX_PIXELS = 64_000_000
"""Pixel limit (width x height of one frame): 64 MP is above any camera photo in common use and
far below what would exhaust memory once decoded (64 MP x 4 bytes = 256 MB)."""

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""File size limit: 50 MiB. Larger files are refused before being read."""

_WHITE = (255, 255, 255)


# --------------------------------------------------------------------------- errors
class ImageLoadError(ValueError):
    """An input could not be turned into an image. ``path`` names the file (``<bytes>`` for
    in-memory input) and ``reason`` says why, in words a researcher can act on."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingImageError(ImageLoadError):
    """The file does not exist or cannot be read (permissions, a directory)."""


class EmptyImageError(ImageLoadError):
    """The file has zero bytes."""


class NotAnImageError(ImageLoadError):
    """The bytes are not in any image format Pillow knows (a text file named ``.jpg``, say)."""


class CorruptImageError(ImageLoadError):
    """The file starts like an image but its data cannot be decoded."""


class TruncatedImageError(CorruptImageError):
    """The file ends before the image data does (an interrupted download or copy)."""


class ImageTooLargeError(ImageLoadError):
    """The file is larger than the byte limit; it was not read."""


class DecompressionBombError(ImageLoadError):
    """The image declares more pixels than the pixel limit; it was not decoded."""


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class LoadedImage:
    """An upright 8-bit RGB image and the facts about the file it came from."""

    image: Image.Image
    """Mode ``RGB``, EXIF orientation applied, transparency composited on white."""
    sha256: str
    """Hash of the original bytes: the image's identity in the store and in caches."""
    path: str
    """The file it was read from, or ``<bytes>``."""
    format: str
    """Pillow's name for the file format (``JPEG``, ``PNG``, ``GIF``...)."""
    width: int
    """Width after EXIF orientation (what a viewer shows)."""
    height: int
    size_bytes: int
    source_mode: str
    """Pillow mode of the decoded file before conversion (``CMYK``, ``I;16``, ``P``...)."""
    frames: int = 1
    """Frames in the file; only the first is kept."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Conversions applied, in words (``rotated upright (EXIF orientation 6)``...)."""
    data: bytes = field(default=b"", repr=False)
    """The original bytes the image was decoded from (``sha256`` is their hash): a caller that
    sends the file as it is uses these rather than reading it a second time."""


# --------------------------------------------------------------------------- public API
def image_sha256(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks so a large file does not sit in memory."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(chunk_size), b""):
                digest.update(chunk)
    except OSError as exc:
        raise MissingImageError(path, _os_reason(exc)) from exc
    return digest.hexdigest()


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> LoadedImage:
    """Read a file (or bytes) into an upright RGB image.

    Args:
        source: a path, or the bytes of an image.
        max_pixels: refuse images whose first frame has more pixels than this, before decoding.
        max_bytes: refuse files larger than this, before reading them.
        name: what to call in-memory bytes in errors (default ``<bytes>``).

    Raises:
        ImageLoadError: one of its subclasses, naming the file and the reason.
    """
    data, label = _read(source, max_bytes=max_bytes, name=name)
    if not data:
        raise EmptyImageError(label, "the file is empty (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    opened = _open(data, label, max_pixels)
    notes: list[str] = []
    frames = int(getattr(opened, "n_frames", 1) or 1)
    if frames > 1:
        notes.append(f"first of {frames} frames kept")
    try:
        opened.load()
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(label, str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise _decode_error(label, exc) from exc
    source_mode = opened.mode
    upright = _upright(opened, notes)
    rgb = _to_rgb(upright, notes)
    return LoadedImage(
        image=rgb,
        sha256=digest,
        path=label,
        format=opened.format or "unknown",
        width=rgb.width,
        height=rgb.height,
        size_bytes=len(data),
        source_mode=source_mode,
        frames=frames,
        notes=tuple(notes),
        data=data,
    )


# --------------------------------------------------------------------------- reading
def _read(
    source: str | os.PathLike[str] | bytes, *, max_bytes: int, name: str | None
) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        label = name or "<bytes>"
        if len(data) > max_bytes:
            raise ImageTooLargeError(label, _too_large(len(data), max_bytes))
        return data, label
    path = Path(source)
    label = name or str(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise MissingImageError(label, "is a directory, not an image file")
        if size > max_bytes:
            raise ImageTooLargeError(label, _too_large(size, max_bytes))
        # Read at most one byte past the limit: a file that grew since stat() is still caught.
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise MissingImageError(label, _os_reason(exc)) from exc
    if len(data) > max_bytes:
        raise ImageTooLargeError(label, _too_large(len(data), max_bytes))
    return data, label


def _open(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Open (parse the header only) and enforce the pixel limit before anything is decoded."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own global limit; ours (max_pixels) decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DecompressionBombError(label, f"{exc} (refused before decoding)") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImageError(label, _not_an_image(data)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _decode_error(label, exc) from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise CorruptImageError(label, f"the header declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise DecompressionBombError(
            label,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} pixels (refused before decoding; raise max_pixels if intended)",
        )
    return image


def _decode_error(label: str, exc: BaseException) -> CorruptImageError:
    message = str(exc) or type(exc).__name__
    if "truncated" in message.lower() or isinstance(exc, EOFError):
        return TruncatedImageError(label, f"the file is truncated: {message}")
    return CorruptImageError(label, f"the image data is corrupt: {message}")


#: leading bytes of the kinds of file most often named by mistake where an image belongs
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "an ELF binary"),
    (b"MZ", "a Windows executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O binary"),
    (b"\xfe\xed\xfa\xcf", "a Mach-O binary"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or a document stored as one)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"DUCK", "a DuckDB database"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
    (b"OggS", "an Ogg media file"),
    (b"ID3", "an MP3 audio file"),
    (b"RIFF", "a RIFF media file (WAV or AVI)"),
    (b"PAR1", "a Parquet file"),
)


def file_kind(data: bytes) -> str:
    """What kind of file ``data`` is, in words, without quoting any of it.

    Why not quote the first bytes: a mistyped manifest path can name ``/etc/shadow`` or
    ``/proc/self/environ``, and the error is printed, stored with ``--skip-bad-rows`` and shown
    in the report. The kind is enough to see the mistake.
    """
    if not data:
        return "an empty file"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[4:8] == b"ftyp":
        return "an MP4/QuickTime video (or another ISO media file)"
    if b"\x00" in data[:1024]:
        return "a binary file of an unknown kind"
    try:
        text = data[:1024].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < 1020:  # not just a character cut at the end of the sample
            return "a binary file of an unknown kind"
        text = data[: exc.start].decode("utf-8")
    stripped = text.lstrip().lower()
    if stripped.startswith("#!"):
        return "a script (text file)"
    if stripped.startswith(("<!doctype html", "<html")):
        return "an HTML page (text file)"
    if stripped.startswith("<svg") or (stripped.startswith("<?xml") and "<svg" in stripped):
        return "an SVG drawing (text file; SVG is not a supported image format)"
    if stripped.startswith("<?xml"):
        return "an XML document (text file)"
    if stripped.startswith(("{", "[")):
        return "a JSON document (text file)"
    return "a text file"


def _not_an_image(data: bytes) -> str:
    return f"not an image: the file is {file_kind(data)} ({len(data):,} bytes)"


def _too_large(size: int, limit: int) -> str:
    return f"{size:,} bytes exceeds the limit of {limit:,} bytes (not read)"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    return exc.strerror or str(exc)


# --------------------------------------------------------------------------- conversion
def _upright(image: Image.Image, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation tag, so what detectors see is what a viewer shows."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a malformed EXIF block must not cost the whole image
        notes.append("EXIF block unreadable; orientation not applied")
        return image
    if orientation in (None, 1):
        return image
    try:
        turned = ImageOps.exif_transpose(image)
    except Exception:
        notes.append(f"EXIF orientation {orientation} could not be applied")
        return image
    notes.append(f"rotated upright (EXIF orientation {orientation})")
    return turned if turned is not None else image


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """8-bit RGB from any mode: high bit depths are scaled (not clipped), alpha and palette
    transparency are composited on white (transparent pixels are often black underneath)."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        notes.append(f"{mode} scaled to 8 bits")
        return Image.fromarray(_to_uint8(np.asarray(image), mode), mode="L").convert("RGB")
    if mode == "P":
        has_alpha = "transparency" in image.info or (
            image.palette is not None and image.palette.mode == "RGBA"
        )
        if not has_alpha:
            return image.convert("RGB")
    if mode in ("P", "PA", "LA", "La", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        alpha = cast("tuple[tuple[int, int], ...]", rgba.getextrema())[3]
        if alpha[0] < 255:
            notes.append("transparency composited on white")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return image.convert("RGB")


def _to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    values = array.astype(np.float64)
    if mode.startswith("I;16"):
        return np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if mode == "F" and low >= 0.0 and high <= 1.0:
        return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(values).astype(np.uint8)
    if low >= 0.0 and high <= 65535.0:
        return np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    span = high - low
    return np.rint((values - low) * (255.0 / span)).astype(np.uint8)
