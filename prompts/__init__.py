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

import jinja2

PROMPTS_DIR = Path(__file__).resolve().parent

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(PROMPTS_DIR)),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=False,
    trim_blocks=True,
    lstrip_blocks=True,
)


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

    def render(self, **variables: object) -> str:
        """Render with ``StrictUndefined``: a missing variable is an error, never empty text."""
        try:
            return self._compiled.render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise jinja2.UndefinedError(f"prompts/{self.name}.j2: {exc}") from exc


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
