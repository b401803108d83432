"""What every perception tool has in common: lazy loading, a version, a lock, a working frame.

A tool loads its model the first time it runs (never at import, so importing the toolkit is
cheap and a missing optional package costs nothing until asked for), once per process. Its
``version`` names the package version, the weights and this project's own pre/post-processing
revision: cached evidence is keyed on it, so changing a threshold means bumping ``REVISION``
and the cache refills instead of serving stale results.

Each tool holds a lock around inference: onnxruntime sessions are thread-safe, but RapidOCR and
scikit-image's cascade keep per-call state, and one lock per tool still lets different tools run
in parallel on the toolkit's thread pool.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import TypeAdapter

from agents.perception.evidence import Box

WORKING_MAX_SIDE = 1024
"""Images are shrunk to this longest side once, before any tool sees them: every model works at
224-736 px, so larger inputs only cost decode and resize time in every tool."""


class ToolUnavailable(RuntimeError):
    """The tool's package (or model file) is not installed; the message says how to get it."""


@dataclass
class Frame:
    """The image as tools see it: shrunk once, with the arrays tools ask for made on demand."""

    image: Image.Image
    """RGB, longest side at most ``WORKING_MAX_SIDE``."""
    scale: float
    """Working size / original size (1.0 when not shrunk)."""
    original_size: tuple[int, int]

    @classmethod
    def from_image(cls, image: Image.Image, max_side: int = WORKING_MAX_SIDE) -> Frame:
        width, height = image.size
        scale = min(1.0, max_side / max(width, height))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
        return cls(image=image, scale=scale, original_size=(width, height))

    @cached_property
    def rgb(self) -> np.ndarray:
        return np.asarray(self.image)

    @cached_property
    def bgr(self) -> np.ndarray:
        """OpenCV channel order, the layout NudeNet and RapidOCR expect from ``cv2.imread``."""
        return np.ascontiguousarray(self.rgb[:, :, ::-1])

    def to_original(self, x: float, y: float, w: float, h: float) -> Box:
        """A box in working pixels -> the same box in pixels of the full-size image."""
        s = 1.0 / self.scale
        width, height = self.original_size
        left, top = max(0, round(x * s)), max(0, round(y * s))
        return Box(
            x=left,
            y=top,
            w=max(0, min(round(w * s), width - left)),
            h=max(0, min(round(h * s), height - top)),
        )


class Tool(ABC):
    """One detector. Subclasses set the class attributes and implement ``_load`` and ``_run``."""

    name: ClassVar[str]
    """Tool name: the key in ``Evidence.tool_versions`` / ``errors`` and in the cache."""
    field: ClassVar[str]
    """The ``Evidence`` field this tool fills."""
    packages: ClassVar[tuple[str, ...]]
    """Distributions whose versions make up the tool version (weights ship inside them)."""
    modules: ClassVar[tuple[str, ...]]
    """Import names that must be present for the tool to run."""
    install_hint: ClassVar[str]
    REVISION: ClassVar[str]
    """This project's processing revision: bump when pre/post-processing or thresholds change."""
    adapter: ClassVar[TypeAdapter[Any]]
    """(De)serialises the section for the cache."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @cached_property
    def version(self) -> str:
        parts = [f"{p}=={_dist_version(p)}" for p in self.packages]
        return "+".join(parts) + f"/{self.REVISION}"

    def unavailable(self) -> str | None:
        """Why the tool cannot run here (a missing package), or None when it can."""
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"not installed ({', '.join(missing)} missing; {self.install_hint})"
        return None

    def load(self) -> None:
        """Load the model once; later calls return at once."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is None:
                reason = self.unavailable()
                if reason:
                    raise ToolUnavailable(reason)
                self._model = self._load()

    def run(self, frame: Frame) -> Any:
        """The tool's section for one image (a pydantic-serialisable value)."""
        self.load()
        with self._run_lock:
            return self._run(frame)

    def dump(self, section: Any) -> str:
        return self.adapter.dump_json(section).decode("utf-8")

    def parse(self, text: str) -> Any:
        return self.adapter.validate_json(text)

    @abstractmethod
    def _load(self) -> Any:
        """Build the model (called once, under a lock)."""

    @abstractmethod
    def _run(self, frame: Frame) -> Any:
        """Run the model on one frame."""


def ort_session(model_path: str, threads: int | None) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads (None: onnxruntime's default,
    one per core) and one inter-op thread (the toolkit parallelises across tools itself)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model_path, sess_options=options, providers=["CPUExecutionProvider"]
    )


def _dist_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "missing"
