"""Every command's rich console, and the one way to style a printed line.

Printed lines carry text the user or a model wrote: run names, file names, error messages that
quote either. rich reads ``[...]`` in a string as markup and ``:name:`` as an emoji code, so
such text crashed a print (``--run "r[/x]"``: ``MarkupError``) or changed it (``:x:`` printed
as an emoji). The consoles made here interpret neither: a plain string prints as written,
whatever it holds. Styling is asked for only through :func:`styled`, whose template is this
program's own text and whose values are escaped, so no call site has to remember to escape.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text


def make_console(**options: Any) -> Console:
    """A ``Console`` that prints strings literally (no markup, no emoji codes, no highlighting
    unless asked for); other options as ``rich.console.Console`` takes them."""
    options.setdefault("markup", False)
    options.setdefault("emoji", False)
    options.setdefault("highlight", False)
    return Console(**options)


def styled(template: str, *values: object, **named: object) -> Text:
    """``template`` (rich markup, this program's own) with ``values`` filled in as plain text.

    ``styled("[red]error:[/] {}", exc)``: the values are ``str.format``-ed into the template
    after escaping, so a value can hold ``[``, ``]`` or ``:x:`` and prints as written.
    """
    text = template.format(
        *(escape(str(v)) for v in values), **{k: escape(str(v)) for k, v in named.items()}
    )
    return Text.from_markup(text, emoji=False)


def plain(value: object) -> Text:
    """``value`` as text rich will not interpret, for renderables that read markup (a
    progress bar's description, a table on a console that has markup on)."""
    return Text(str(value))
