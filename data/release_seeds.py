"""The seed sentences of the paper's generation script, read from a checkout of the release.

The authors' ``moderation explanation generation/vllm_data_generation.py``
(zhaoyuzhi/ICM-Assistant, under ``data/ICM-Instruct_data_generation_pipeline/``) seeds each image
with a sentence of its own ``short_desc`` dict ("It is known that ..."), chosen through
``conversion_dict`` from the image name's category key. These sentences differ from the
policy's category sentences (``rule_definition.csv``) for most categories (``stockings`` is
"taking off" there, "wearing" in the policy), so a run that means to make the data as the
release made it reads them from the checkout the user points to, at run time: they are the
authors' text, never copied into this package.

The script is read, never run: both dicts are literal assignments, taken with ``ast``. Its one
broken entry is handled by name: ``conversion_dict['middle_leg']`` is ``'middle_leg'``, but the
sentence is keyed ``'middle_legs'`` (the script raises ``KeyError`` on every middle_leg image);
:func:`release_seeds` resolves such a key by its singular/plural twin and reports it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

#: where the generation script lives in a checkout of the release
SCRIPT = (
    Path("data")
    / "ICM-Instruct_data_generation_pipeline"
    / "moderation explanation generation"
    / "vllm_data_generation.py"
)


class ReleaseSeedError(ValueError):
    """The checkout has no readable generation script or seed dicts (names the file)."""


@dataclass(frozen=True)
class ReleaseSeeds:
    """The release's seed sentence of each category key, and the keys it had to repair."""

    script: Path
    sentences: dict[str, str]
    repaired: dict[str, str] = field(default_factory=dict)
    """category key -> the ``short_desc`` key used instead of the missing one."""

    def seed(self, category: str) -> str | None:
        return self.sentences.get(category)


def _literal_dict(tree: ast.Module, name: str, script: Path) -> dict[str, str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ReleaseSeedError(f"{script}:{node.lineno}: {name} is not a literal") from exc
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ReleaseSeedError(f"{script}:{node.lineno}: {name} is not a str -> str dict")
            return value
    raise ReleaseSeedError(f"{script}: no {name} = {{...}} assignment")


def _twin(key: str, known: dict[str, str]) -> str | None:
    """``middle_leg`` -> ``middle_legs`` (or back): the same key in the other number."""
    for other in (f"{key}s", key[:-1] if key.endswith("s") else None):
        if other and other in known:
            return other
    return None


def release_seeds(checkout: Path) -> ReleaseSeeds:
    """The seed sentence of every category key of the release's ``conversion_dict``.

    Raises:
        ReleaseSeedError: no script, a syntax error, or a dict that is not a literal; or a
            category whose sentence key is missing and has no singular/plural twin.
    """
    script = Path(checkout) / SCRIPT
    if not script.is_file():
        raise ReleaseSeedError(
            f"{checkout}: no {SCRIPT.as_posix()} (give a checkout of zhaoyuzhi/ICM-Assistant)"
        )
    try:
        tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    except SyntaxError as exc:
        raise ReleaseSeedError(f"{script}:{exc.lineno}: not Python ({exc.msg})") from exc
    short_desc = _literal_dict(tree, "short_desc", script)
    conversion = _literal_dict(tree, "conversion_dict", script)
    sentences: dict[str, str] = {}
    repaired: dict[str, str] = {}
    for category, key in conversion.items():
        if key not in short_desc:
            twin = _twin(key, short_desc)
            if twin is None:
                raise ReleaseSeedError(
                    f"{script}: conversion_dict[{category!r}] is {key!r}, which short_desc "
                    "does not have"
                )
            repaired[category] = twin
            key = twin
        sentences[category] = short_desc[key]
    return ReleaseSeeds(script=script, sentences=sentences, repaired=repaired)
