"""Prompt templates as files: a template's identity is its name plus the hash of its content.

Every role renders its messages from a Jinja2 file in this folder. The hash goes into each trace
row and each cache key, so editing a template invalidates cached answers made with the old text
(distilabel's cache misses this; we do not).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

PROMPTS_DIR = Path(__file__).resolve().parent

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(PROMPTS_DIR)),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    trim_blocks=True,
    lstrip_blocks=True,
)


#: value types a rendering is remembered by (immutable, compared by value)
_PLAIN = (str, int, float, bool, type(None))
#: renderings remembered per template before it starts over
_MAX_REMEMBERED = 256


class PromptNotFoundError(LookupError):
    """Raised when a template name has no file in ``prompts/``."""


@dataclass(frozen=True, eq=True)
class PromptTemplate:
    """A loaded template file.

    Attributes:
        name: file name without the ``.j2`` suffix, e.g. ``describer.system``.
        sha256: hex digest of the file's bytes; recorded with every call made from it.
        source: the template text.
    """

    name: str
    sha256: str
    source: str

    @property
    def short_hash(self) -> str:
        """First 12 hex digits: enough to tell versions apart in a table."""
        return self.sha256[:12]

    @property
    def prompt_id(self) -> str:
        """``name@hash12``, the form stored in traces."""
        return f"{self.name}@{self.short_hash}"

    @cached_property
    def _compiled(self) -> jinja2.Template:
        return _ENV.from_string(self.source)

    @cached_property
    def _used(self) -> tuple[str, ...] | None:
        """The variables the template reads, sorted; None where that cannot be known from its
        own text (it includes, imports or extends another template)."""
        tree = _ENV.parse(self.source)
        if any(True for _ in meta.find_referenced_templates(tree)):
            return None
        return tuple(sorted(meta.find_undeclared_variables(tree)))

    @cached_property
    def _rendered(self) -> dict[tuple[Any, ...], str]:
        return {}

    def render(self, **variables: object) -> str:
        """Render with ``StrictUndefined``: a missing variable is an error, never empty text.

        A rendering is remembered by the values of the variables the template reads, when
        each is a plain value (text, number, bool, None): a role's system prompt reads none or
        one or two of them, and was rendered anew for every call. The template object is
        its content (a changed file is another template, with another hash), so a remembered
        text is always this content's.
        """
        key = self._key(variables)
        if key is not None:
            done = self._rendered.get(key)
            if done is not None:
                return done
        try:
            text = self._compiled.render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise jinja2.UndefinedError(f"prompts/{self.name}.j2: {exc}") from exc
        if key is not None:
            if len(self._rendered) >= _MAX_REMEMBERED:
                self._rendered.clear()
            self._rendered[key] = text
        return text

    def _key(self, variables: dict[str, object]) -> tuple[Any, ...] | None:
        """What a rendering is remembered by, or None where it must not be."""
        used = self._used
        if used is None:
            return None
        key: list[Any] = []
        for name in used:
            if name not in variables:
                return None  # rendering raises (StrictUndefined)
            value = variables[name]
            if type(value) not in _PLAIN:
                return None
            key.append((name, type(value), value))  # the type: 1 and True are equal keys
        return tuple(key)


@cache
def load_prompt(name: str) -> PromptTemplate:
    """Load ``prompts/<name>.j2`` once per process."""
    path = PROMPTS_DIR / f"{name}.j2"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.j2"))) or "none"
        raise PromptNotFoundError(f"no prompt template {path} (available: {available})")
    raw = path.read_bytes()
    return PromptTemplate(name=name, sha256=hashlib.sha256(raw).hexdigest(), source=raw.decode())


def list_prompts() -> list[PromptTemplate]:
    """Every template in the folder, sorted by name."""
    return [load_prompt(p.stem) for p in sorted(PROMPTS_DIR.glob("*.j2"))]
