"""Exposure detector: body parts, exposed or covered, with boxes (NudeNet 3.4, YOLOv8n, 320 px).

NudeNet's wheel metadata says MIT but its LICENSE file is AGPL-3.0, so it is an optional extra
(``pip install 'icm-assistant[nudity]'``). Without it the evidence says "not installed" and
everything else still runs.

NudeNet builds its own onnxruntime session with default threading; the toolkit swaps in a
session with the requested thread count. Classes are the detector's own (``BELLY_EXPOSED``,
``FEMALE_BREAST_COVERED``, ``FACE_FEMALE``...); ``part`` and ``exposed`` restate them in words so
that nothing downstream parses label strings.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import TypeAdapter

from agents.perception.base import Frame, Tool, ort_session
from agents.perception.evidence import Detection

MIN_SCORE = 0.25
"""Detections below this are dropped (NudeNet itself keeps everything from 0.2)."""

_FACE_WORDS = {"FACE_FEMALE": "face (female)", "FACE_MALE": "face (male)"}


def describe_label(label: str) -> tuple[str, bool]:
    """``BELLY_EXPOSED`` -> (``belly``, True); ``FACE_MALE`` -> (``face (male)``, False)."""
    if label in _FACE_WORDS:
        return _FACE_WORDS[label], False
    stem, _, state = label.rpartition("_")
    return stem.lower().replace("_", " "), state == "EXPOSED"


class ExposureTool(Tool):
    name = "exposure"
    field = "exposure"
    packages = ("nudenet",)
    modules = ("nudenet", "onnxruntime", "cv2")
    install_hint = "pip install 'icm-assistant[nudity]' (NudeNet, AGPL-3.0)"
    REVISION = "r1"
    adapter = TypeAdapter(list[Detection])

    def _load(self) -> Any:
        import nudenet

        detector = nudenet.NudeDetector()
        model_path = os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")
        detector.onnx_session = ort_session(model_path, self.threads)
        detector.input_name = detector.onnx_session.get_inputs()[0].name
        return detector

    def _run(self, frame: Frame) -> list[Detection]:
        raw = self._model.detect(frame.bgr)
        detections = []
        for item in raw:
            if item["score"] < MIN_SCORE:
                continue
            part, exposed = describe_label(item["class"])
            detections.append(
                Detection(
                    label=item["class"],
                    part=part,
                    exposed=exposed,
                    score=round(float(item["score"]), 4),
                    box=frame.to_original(*item["box"]),
                )
            )
        return sorted(detections, key=lambda d: -d.score)
