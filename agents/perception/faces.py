"""Frontal faces: the LBP frontal-face cascade that ships inside scikit-image.

OpenCV 5 (the build pip installs for ``opencv-python-headless``) no longer has
``CascadeClassifier`` or the ``haarcascades`` data, and its DNN face detector needs a model file
that no package ships; scikit-image carries OpenCV's ``lbpcascade_frontalface`` with its own
cascade evaluator, so that is used here. It finds upright frontal faces only: profiles, backs and
faces smaller than about 1/13 of the image's longest side are missed, which the evidence text
says. The exposure detector (NudeNet), when installed, adds its own face classes.

The search runs on a grayscale copy at most ``SEARCH_MAX_SIDE`` px long: the cascade's cost grows
with pixels and scales, and moderation cares about faces large enough to matter. The settings were
chosen on the bundled samples (the only labelled faces at hand, so a weak basis): at 320 px, or
with 3 neighbours, the cascade also "found" a second face in the astronaut photo and a face in
the dahlia; at 256 px, scale step 1.3 and 4 neighbours it finds exactly the two frontal faces, in
about 40 ms per image on one core.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from pydantic import TypeAdapter

from agents.perception.base import Frame, Tool
from agents.perception.evidence import Face, Faces

SEARCH_MAX_SIDE = 256
MIN_FACE = 20
"""Smallest face searched for, in pixels of the search image."""
SCALE_FACTOR = 1.3
MIN_NEIGHBOURS = 4
"""Overlapping hits needed to accept a face: fewer finds more faces and more false ones."""


class FacesTool(Tool):
    name = "faces"
    field = "faces"
    packages = ("scikit-image",)
    modules = ("skimage",)
    install_hint = "pip install 'icm-assistant[perception]' (scikit-image)"
    REVISION = f"r1-lbp-{SEARCH_MAX_SIDE}-{MIN_FACE}-{SCALE_FACTOR}-{MIN_NEIGHBOURS}"
    adapter = TypeAdapter(Faces)

    def _load(self) -> Any:
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        return Cascade(lbp_frontal_face_cascade_filename())

    def _run(self, frame: Frame) -> Faces:
        gray = frame.image.convert("L")
        shrink = min(1.0, SEARCH_MAX_SIDE / max(gray.size))
        if shrink < 1.0:
            size = (max(1, round(gray.width * shrink)), max(1, round(gray.height * shrink)))
            gray = gray.resize(size, Image.Resampling.BILINEAR)
        pixels = np.asarray(gray, dtype=np.float64) / 255.0
        side = min(gray.size)
        if side < MIN_FACE:
            return Faces(count=0, faces=[])
        found = self._model.detect_multi_scale(
            img=pixels,
            scale_factor=SCALE_FACTOR,
            step_ratio=1,
            min_size=(MIN_FACE, MIN_FACE),
            max_size=(side, side),
            min_neighbor_number=MIN_NEIGHBOURS,
        )
        to_working = 1.0 / shrink
        width, height = frame.original_size
        faces = []
        for hit in found:
            box = frame.to_original(
                hit["c"] * to_working,
                hit["r"] * to_working,
                hit["width"] * to_working,
                hit["height"] * to_working,
            )
            faces.append(Face(box=box, area_fraction=round(box.area / (width * height), 4)))
        faces.sort(key=lambda f: -f.area_fraction)
        return Faces(count=len(faces), faces=faces)
