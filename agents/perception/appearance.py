"""Cheap, certain facts about how an image looks: colour or greyscale, its dominant colours,
and whether it is a photograph or a flat graphic (a drawing, a text card).

The learned detectors guess at content and can be wrong; these are measured from the pixels
and are not guesses, so a text-only describer may state them and the grounding check
(:mod:`agents.perception.grounding`) may hold a text to them: a colour photo of a dahlia
described as "a black and white image" contradicts a measured fact.

Measured on a 128-px thumbnail (the facts are global; a thumbnail keeps it under a few ms):

- greyscale: the mean spread between the largest and smallest RGB channel of a pixel is under
  ``GREY_SPREAD`` (a JPEG of a grey photo keeps a spread of 1-3 from compression);
- dominant colours: the image quantised to ``PALETTE`` colours, each named by hue, saturation
  and value, kept when it covers at least ``MIN_SHARE`` of the pixels;
- graphic: the ``FLAT_COLOURS`` most common colours (6 bits per channel) cover at least
  ``FLAT_SHARE`` of the pixels. Drawn cards and memes are a few flat fills plus anti-aliased
  edges (0.69-0.93 on the bundled ones); a photograph's colours spread over hundreds of bins
  (0.03-0.46, the greyscale camera photo the highest).
"""

from __future__ import annotations

import colorsys
from collections import Counter
from typing import Any

import numpy as np
from PIL import Image
from pydantic import TypeAdapter

from agents.perception.base import Frame, Tool
from agents.perception.evidence import Appearance, ColourShare

THUMB_SIDE = 128
GREY_SPREAD = 6.0
PALETTE = 6
MIN_SHARE = 0.08
FLAT_COLOURS = 8
FLAT_SHARE = 0.6


def colour_name(rgb: tuple[int, int, int]) -> str:
    """A plain colour word for one RGB colour (black, white, grey, or a hue: red, orange...)."""
    r, g, b = (c / 255.0 for c in rgb)
    hue, lightness, saturation = colorsys.rgb_to_hls(r, g, b)
    value = max(r, g, b)
    if value < 0.16:
        return "black"
    if saturation < 0.18 or (max(r, g, b) - min(r, g, b)) < 0.1:
        return "white" if lightness > 0.85 else "grey"
    degrees = hue * 360.0
    if degrees < 15 or degrees >= 340:
        name = "red"
    elif degrees < 45:
        name = "orange"
    elif degrees < 70:
        name = "yellow"
    elif degrees < 190:
        name = "green"
    elif degrees < 255:
        name = "blue"
    elif degrees < 290:
        name = "purple"
    else:
        name = "pink"
    if name in ("orange", "red") and value < 0.55 and lightness < 0.4:
        return "brown"
    if name == "red" and lightness > 0.7:
        return "pink"
    return name


def measure(image: Image.Image) -> Appearance:
    """The appearance facts of one RGB image."""
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    pixels = np.asarray(thumb, dtype=np.int16).reshape(-1, 3)
    spread = float((pixels.max(axis=1) - pixels.min(axis=1)).mean())
    greyscale = spread < GREY_SPREAD
    binned = Counter(map(tuple, (pixels >> 2).tolist()))
    flat_share = sum(n for _, n in binned.most_common(FLAT_COLOURS)) / len(pixels)
    quantised = thumb.quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT)
    palette = quantised.getpalette() or []
    counts = sorted(quantised.getcolors() or [], reverse=True)
    shares: dict[str, float] = {}
    for count, entry in counts:
        index = int(entry)  # type: ignore[call-overload]  # a palette index in "P" mode
        rgb = (palette[3 * index], palette[3 * index + 1], palette[3 * index + 2])
        name = "grey" if greyscale and colour_name(rgb) not in ("black", "white") else None
        name = name or colour_name(rgb)
        shares[name] = shares.get(name, 0.0) + count / len(pixels)
    dominant = [
        ColourShare(name=name, share=round(share, 2))
        for name, share in sorted(shares.items(), key=lambda kv: -kv[1])
        if share >= MIN_SHARE
    ]
    return Appearance(
        greyscale=greyscale,
        graphic=flat_share >= FLAT_SHARE,
        colours=dominant,
        channel_spread=round(spread, 2),
        flat_share=round(flat_share, 3),
    )


class AppearanceTool(Tool):
    """Colour, dominant colours and photo-vs-graphic, measured from pixels (no model)."""

    name = "appearance"
    field = "appearance"
    packages = ("pillow", "numpy")
    modules = ("PIL", "numpy")
    install_hint = "pip install pillow numpy"
    REVISION = "r1"
    adapter = TypeAdapter(Appearance)

    def _load(self) -> Any:
        return measure  # nothing to load; the model slot must not be None

    def _run(self, frame: Frame) -> Appearance:
        return measure(frame.image)
