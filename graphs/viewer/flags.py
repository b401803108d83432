"""Detector flags shown beside a blurred image: what the stored perception evidence says
(exposed body parts, the NSFW score), so a reviewer knows what to expect before revealing it.

Reads the ``perception`` rows the sample page already has (tool, evidence); never runs a
detector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

NSFW_HIGH = 0.5
"""An NSFW score at or above this is flagged as likely explicit."""
EXPOSED_SHOWN = 0.35
"""Exposed parts below this detector score are not listed (the describer's threshold)."""


def detector_flags(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per detector that flags something: ``NSFW score 0.87 (high)``,
    ``exposed: belly 0.62, female breast 0.41``; ``no exposed body parts detected`` when the
    exposure detector ran and found none. Empty when no detector evidence is stored."""
    flags: list[str] = []
    for row in rows:
        tool, evidence = row.get("tool"), row.get("evidence")
        if tool == "nsfw" and isinstance(evidence, int | float):
            level = "high" if evidence >= NSFW_HIGH else "low"
            flags.append(f"NSFW score {float(evidence):.2f} ({level})")
        elif tool == "exposure" and isinstance(evidence, list):
            parts = [
                f"{d.get('part') or d.get('label')} {float(d.get('score', 0)):.2f}"
                for d in evidence
                if isinstance(d, Mapping)
                and d.get("exposed")
                and float(d.get("score", 0)) >= EXPOSED_SHOWN
            ]
            flags.append("exposed: " + ", ".join(parts) if parts
                         else "no exposed body parts detected")  # fmt: skip
    return flags
