"""``perceive(image) -> Evidence``: every detector over one image, cached in the store.

Models load lazily, once per process (a module-level default toolkit, or one you build with
other settings). Tools run on a thread pool: onnxruntime and torch release the GIL during
inference, so with ``workers=2`` two tools of the same image run at the same time.

Threads. ``threads`` is the intra-op thread count of every model (onnxruntime sessions and
torch); ``workers`` is how many tools run at once. On a machine shared with an LLM, keep the
product small. ``threads=None`` leaves each library's default (one thread per core). Note that
torch's thread count is process-wide: a toolkit built with ``threads=N`` sets it for the process.

Cache. With a ``Store``, each tool's section is cached in ``perception_cache`` under (image
sha256, tool, tool version): a re-run reads it instead of running the model, and a new tool
version (other weights, other thresholds) misses and recomputes. Failures and missing tools are
never cached.

Bad inputs raise :class:`data.images.ImageLoadError` from ``perceive``; ``perceive_many``
returns the error in that image's place and carries on with the rest.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from agents.perception.appearance import AppearanceTool
from agents.perception.base import Frame, Tool
from agents.perception.evidence import Evidence
from agents.perception.exposure import ExposureTool
from agents.perception.faces import FacesTool
from agents.perception.nsfw import NsfwTool
from agents.perception.objects import ObjectsTool
from agents.perception.ocr import OcrTool
from data.images import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    LoadedImage,
    load_image,
)

if TYPE_CHECKING:
    from data.store import Store

TOOL_CLASSES: tuple[type[Tool], ...] = (
    ExposureTool,
    NsfwTool,
    ObjectsTool,
    OcrTool,
    FacesTool,
    AppearanceTool,
)
TOOL_NAMES: tuple[str, ...] = tuple(cls.name for cls in TOOL_CLASSES)

ImageSource = str | os.PathLike[str] | bytes | LoadedImage


class Toolkit:
    """A set of loaded-on-demand detectors and the thread pool they run on."""

    def __init__(
        self,
        *,
        threads: int | None = None,
        workers: int = 1,
        tools: Sequence[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        chosen = list(TOOL_NAMES) if tools is None else list(tools)
        unknown = sorted(set(chosen) - set(TOOL_NAMES))
        if unknown:
            raise ValueError(f"unknown perception tools {unknown}; known: {list(TOOL_NAMES)}")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.threads = threads
        self.workers = workers
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.tools: dict[str, Tool] = {
            cls.name: cls(threads) for cls in TOOL_CLASSES if cls.name in chosen
        }
        self._unavailable = {name: tool.unavailable() for name, tool in self.tools.items()}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="perception")
        if threads is not None and "objects" in self.tools and not self._unavailable["objects"]:
            import torch

            torch.set_num_threads(threads)

    # ------------------------------------------------------------------ lifecycle
    def warm_up(self) -> dict[str, str]:
        """Load every available model now (else the first image pays); returns load errors."""
        errors = {}
        for name, tool in self.tools.items():
            if self._unavailable[name]:
                errors[name] = self._unavailable[name] or ""
                continue
            try:
                tool.load()
            except Exception as exc:
                errors[name] = f"failed to load: {type(exc).__name__}: {exc}"
        return errors

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Toolkit:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ perception
    def load(self, source: ImageSource) -> LoadedImage:
        if isinstance(source, LoadedImage):
            return source
        return load_image(source, max_pixels=self.max_pixels, max_bytes=self.max_bytes)

    def perceive(self, source: ImageSource, *, store: Store | None = None) -> Evidence:
        """Run every tool on one image (raises ImageLoadError for a bad input)."""
        return self._evidence(self.load(source), store)

    def perceive_many(
        self, sources: Iterable[ImageSource], *, store: Store | None = None
    ) -> list[Evidence | ImageLoadError]:
        """Evidence per input, in input order; a bad input yields its ImageLoadError."""

        def one(source: ImageSource) -> Evidence | ImageLoadError:
            try:
                loaded = self.load(source)
            except ImageLoadError as exc:
                return exc
            return self._evidence(loaded, store)

        # Images are fanned out on their own small pool; their tools go to the tool pool. Only
        # `workers` images are decoded at a time, so memory stays flat on long batches.
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="images") as images:
            return list(images.map(one, sources))

    def _evidence(self, loaded: LoadedImage, store: Store | None) -> Evidence:
        frame = Frame.from_image(loaded.image)
        hits = _cache_read(store, loaded.sha256) if store is not None else {}
        versions: dict[str, str] = {}
        errors: dict[str, str] = {}
        sections: dict[str, Any] = {}
        cached: list[str] = []
        timings: dict[str, float] = {}
        running: dict[str, Future[tuple[Any, float]]] = {}
        for name, tool in self.tools.items():
            if self._unavailable[name]:
                errors[name] = self._unavailable[name] or ""
                continue
            versions[name] = tool.version
            hit = hits.get((name, tool.version))
            if hit is not None:
                try:
                    sections[tool.field] = tool.parse(hit)
                    cached.append(name)
                    continue
                except ValueError:
                    pass  # a cache row this code cannot read: recompute and overwrite
            running[name] = self._pool.submit(_timed, tool, frame)
        fresh: list[dict[str, Any]] = []
        for name, future in running.items():
            tool = self.tools[name]
            try:
                section, elapsed_ms = future.result()
            except Exception as exc:  # one failing detector must not cost the others
                errors[name] = f"failed: {type(exc).__name__}: {exc}"
                continue
            sections[tool.field] = section
            timings[name] = round(elapsed_ms, 2)
            fresh.append(
                {
                    "image_sha256": loaded.sha256,
                    "tool": name,
                    "tool_version": tool.version,
                    "evidence_json": tool.dump(section),
                }
            )
        if store is not None and fresh:
            _cache_write(store, fresh)
        return Evidence(
            image_sha256=loaded.sha256,
            image_path=loaded.path,
            width=loaded.width,
            height=loaded.height,
            tool_versions=versions,
            errors=errors,
            cached=cached,
            timings_ms=timings,
            **sections,
        )


def _timed(tool: Tool, frame: Frame) -> tuple[Any, float]:
    """The section and its inference time (a first call's model loading is not counted)."""
    tool.load()
    start = time.perf_counter()
    section = tool.run(frame)
    return section, (time.perf_counter() - start) * 1000.0


def _cache_read(store: Store, sha256: str) -> dict[tuple[str, str], str]:
    from data.store import queries  # duckdb and pandas load only once a store is given

    rows = queries.perception_rows(store, sha256)
    return {(row["tool"], row["tool_version"]): row["evidence_json"] for row in rows}


def _cache_write(store: Store, rows: list[dict[str, Any]]) -> None:
    from data.store import records  # duckdb and pandas load only once a store is given

    # replace: a row that could not be parsed (see above) is overwritten by the fresh result.
    records.record_perception(store, rows)


# ---------------------------------------------------------------------- module-level default
_default: Toolkit | None = None
_default_lock = threading.Lock()


def default_toolkit() -> Toolkit:
    """The process-wide toolkit (library default threads, one tool at a time), built lazily."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Toolkit()
        return _default


def perceive(
    image: ImageSource, *, store: Store | None = None, toolkit: Toolkit | None = None
) -> Evidence:
    """Evidence for one image; raises :class:`data.images.ImageLoadError` for a bad input."""
    return (toolkit or default_toolkit()).perceive(image, store=store)


def perceive_many(
    images: Iterable[ImageSource], *, store: Store | None = None, toolkit: Toolkit | None = None
) -> list[Evidence | ImageLoadError]:
    """Evidence per image in order; bad inputs yield their error and the batch carries on."""
    return (toolkit or default_toolkit()).perceive_many(images, store=store)
