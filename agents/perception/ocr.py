"""Text in the image: RapidOCR 3.10 (PP-OCRv6 small detector and recogniser, ONNX).

Used for policy text attributes (suggestive captions, betting odds and bonuses, lottery
wording) and to catch prompt-injection attempts written into images.

Speed settings, chosen on the bundled samples (OCR is the slowest tool): text detection runs
with the longest side limited to ``DET_MAX_SIDE`` instead of RapidOCR's default of upscaling
the *shortest* side to 736 px, and the 180-degree orientation classifier is off (upside-down
text is rare in moderation images and the classifier costs a model call per text box).
Recognition runs one line at a time: batching pads every line to the widest in the batch, which
cost 20-30% more on the bundled text images (recognition is ~30-60 ms per line on one core).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import TypeAdapter

from agents.perception.base import Frame, Tool
from agents.perception.evidence import TextLine

DET_MAX_SIDE = 640
MIN_TEXT_SCORE = 0.5
"""RapidOCR's own default: recognised lines below this are dropped."""


class OcrTool(Tool):
    name = "ocr"
    field = "ocr"
    packages = ("rapidocr",)
    modules = ("rapidocr", "onnxruntime", "cv2")
    install_hint = "pip install 'icm-assistant[perception]'"
    REVISION = f"r1-det{DET_MAX_SIDE}-nocls-b1"
    adapter = TypeAdapter(list[TextLine])

    def _load(self) -> Any:
        from rapidocr import RapidOCR

        threads = -1 if self.threads is None else self.threads
        return RapidOCR(
            params={
                "Global.log_level": "error",
                "Global.use_cls": False,
                "Global.text_score": MIN_TEXT_SCORE,
                "Det.limit_type": "max",
                "Det.limit_side_len": DET_MAX_SIDE,
                "Rec.rec_batch_num": 1,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )

    def _run(self, frame: Frame) -> list[TextLine]:
        result = self._model(frame.bgr)
        if not result.txts:
            return []
        lines = []
        for text, score, polygon in zip(result.txts, result.scores, result.boxes, strict=True):
            points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
            left, top = points.min(axis=0)
            right, bottom = points.max(axis=0)
            lines.append(
                TextLine(
                    text=str(text).strip(),
                    score=round(float(score), 4),
                    box=frame.to_original(left, top, right - left, bottom - top),
                )
            )
        return [line for line in lines if line.text]
