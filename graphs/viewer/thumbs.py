"""Images for the viewer: thumbnails and display copies, re-encoded server side and cached.

Only files the store names (``samples.image_path``, looked up by sample id) are ever read; a URL
never carries a path. Every image is decoded with the project's loader (decompression-bomb and
size limits, EXIF orientation) and re-encoded as JPEG, so whatever bytes a file holds (an HTML
page saved as ``.jpg``, say) the browser only ever receives a JPEG.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from pathlib import Path

from data.images import ImageLoadError, load_image

THUMB_SIDE = 96
DISPLAY_SIDE = 768


class ImageCache:
    """An LRU of encoded JPEGs keyed by (path, file mtime and size, side)."""

    def __init__(self, max_items: int = 4096, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def jpeg(self, path: Path, side: int) -> bytes | None:
        """The image at ``path`` scaled to fit ``side`` pixels, or None if it cannot be read."""
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_mtime_ns, stat.st_size, side)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = encode(path, side)
        if data is None:
            return None
        with self._lock:
            self._items[key] = data
            self._bytes += len(data)
            while self._items and (
                len(self._items) > self.max_items or self._bytes > self.max_bytes
            ):
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)
        return data


def encode(path: Path, side: int, quality: int = 82) -> bytes | None:
    try:
        loaded = load_image(path)
    except ImageLoadError:
        return None
    image = loaded.image.copy()
    image.thumbnail((side, side))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def resolve(image_path: str | None, db: Path) -> Path | None:
    """A stored image path as a file: as written, else relative to the database's folder."""
    if not image_path:
        return None
    path = Path(image_path)
    if path.is_file():
        return path
    beside = db.parent / path
    return beside if not path.is_absolute() and beside.is_file() else None


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
