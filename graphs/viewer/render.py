"""Templates and formatting shared by the served pages and the exported report.

Autoescape is on for every template, and no template applies ``|safe`` to data from the store:
model output is untrusted text, so a ``<script>`` in an explanation is shown as text. The only
markup inserted unescaped is the viewer's own stylesheet, inlined into the exported report.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import ChainableUndefined, Environment, FileSystemLoader
from markupsafe import Markup

from graphs.viewer.flags import detector_flags

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def pretty(value: Any) -> str:
    """JSON for a ``<pre>`` block (escaped by autoescape when output); text stays text."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def num(value: Any, spec: str = ",") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def cost(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def stamp(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def clip(text: Any, limit: int = 160) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: the Unicode bidirectional controls: embeddings, overrides, isolates and their terminators,
#: and the implicit marks
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def visible_controls(value: Any) -> Any:
    """Every printed value with its bidi controls made visible (``[U+202E]``).

    Why: model text and file names are untrusted; an unclosed RIGHT-TO-LEFT OVERRIDE in one
    reverses the page's own text after it, and one in a file name shows ``gpj.exe`` as
    ``exe.jpg``. Shown as code points, a control can neither reorder the page nor hide what a
    name really is. (The stylesheet isolates model-text elements as well: ``unicode-bidi:
    isolate``, so right-to-left text stays within its element.) Markup (the inlined
    stylesheet) and non-strings pass unchanged.
    """
    if isinstance(value, str) and not isinstance(value, Markup) and BIDI_CONTROLS.search(value):
        return BIDI_CONTROLS.sub(lambda m: f"[U+{ord(m.group(0)):04X}]", value)
    return value


def query(params: dict[str, Any], **changes: Any) -> str:
    """``?a=1&b=2`` from the current parameters with ``changes`` applied (None removes)."""
    merged = {**params, **changes}
    pairs = []
    for key, value in merged.items():
        if value is None or value == "" or value is False:
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            pairs.append((key, "1" if item is True else str(item)))
    return "?" + urlencode(pairs) if pairs else "?"


class Links:
    """URLs of the served viewer (the exported report subclasses this with anchors)."""

    static = True

    def run(self, run_id: str) -> str:
        return f"/runs/{quote(run_id, safe='')}"

    def sample(self, sample_id: str) -> str:
        return f"/samples/{quote(sample_id, safe='')}"

    def thumb(self, sample_id: str) -> str | None:
        return f"/thumb/{quote(sample_id, safe='')}.jpg"

    def image(self, sample_id: str) -> str | None:
        return f"/image/{quote(sample_id, safe='')}.jpg"


def environment(*, blur: bool = True) -> Environment:
    """The templates; ``blur``: images render blurred until the reader reveals one (every page
    says which setting is on)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        # Stored JSON (bindings, reports) comes in many shapes: a missing key shows as blank.
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=visible_controls,
    )
    env.filters.update(pretty=pretty, num=num, cost=cost, duration=duration, stamp=stamp, clip=clip)
    env.globals.update(query=query, blur=blur)
    env.filters["detector_flags"] = detector_flags
    return env


def stylesheet() -> str:
    return (STATIC / "viewer.css").read_text()
