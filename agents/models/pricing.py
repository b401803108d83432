"""Cost of a call in USD from its token counts and a per-model price table.

Prices live in ``prices.yaml`` beside this file (list prices per million tokens, and the batch
APIs' rates as ``batch_input``/``batch_output`` where the provider has one, and the prompt cache's
as ``cached_input`` (a cached read) and ``cache_write`` (Anthropic's cache write)); a role's
``price_input_per_mtok`` / ``price_output_per_mtok`` settings override them, which is how a
researcher prices a model the table does not know or a negotiated rate. Models running in this
process cost 0. An unknown hosted model gets ``None``: a cost that is not known is not zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from agents.models.providers import IN_PROCESS_PROVIDERS

PRICES_PATH = Path(__file__).with_name("prices.yaml")


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float
    batch_input_per_mtok: float | None = None
    batch_output_per_mtok: float | None = None
    cached_input_per_mtok: float | None = None
    """A prompt token read from the provider's cache; None: the input rate (not known)."""
    cache_write_per_mtok: float | None = None
    """A prompt token written to the provider's cache; None: the input rate."""

    def for_delivery(self, delivery: str) -> Price | None:
        """The price of a call sent this way (``batch``: the batch rates; None when the table
        has none: a batch price that is not known is not the sync price)."""
        if delivery != "batch":
            return self
        if self.batch_input_per_mtok is None or self.batch_output_per_mtok is None:
            return None
        # the batch APIs halve every rate, the cache's included
        half = self.batch_input_per_mtok / self.input_per_mtok if self.input_per_mtok else 1.0
        return Price(
            self.batch_input_per_mtok,
            self.batch_output_per_mtok,
            cached_input_per_mtok=_scaled(self.cached_input_per_mtok, half),
            cache_write_per_mtok=_scaled(self.cache_write_per_mtok, half),
        )

    def cost(
        self,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_tokens: int | None = None,
        cache_write_tokens: int | None = None,
    ) -> float:
        """USD for a call; ``input_tokens`` is the whole prompt, of which ``cached_tokens`` were
        read from the provider's cache and ``cache_write_tokens`` written to it."""
        cached, written = cached_tokens or 0, cache_write_tokens or 0
        plain = max(0, (input_tokens or 0) - cached - written)
        cached_rate = self.cached_input_per_mtok
        write_rate = self.cache_write_per_mtok
        return (
            plain * self.input_per_mtok
            + cached * (self.input_per_mtok if cached_rate is None else cached_rate)
            + written * (self.input_per_mtok if write_rate is None else write_rate)
            + (output_tokens or 0) * self.output_per_mtok
        ) / 1e6


def _scaled(rate: float | None, factor: float) -> float | None:
    return None if rate is None else rate * factor


@cache
def price_table(path: Path = PRICES_PATH) -> dict[str, dict[str, Price]]:
    """provider -> model -> price, read once."""
    raw = yaml.safe_load(path.read_text()) or {}
    return {
        provider: {name: _price(p) for name, p in models.items()}
        for provider, models in raw.items()
    }


def _price(row: dict[str, float]) -> Price:
    def rate(name: str) -> float | None:
        value = row.get(name)
        return None if value is None else float(value)

    return Price(
        float(row["input"]),
        float(row["output"]),
        rate("batch_input"),
        rate("batch_output"),
        rate("cached_input"),
        rate("cache_write"),
    )


def lookup_price(
    provider: str, model: str, table: dict[str, dict[str, Price]] | None = None
) -> Price | None:
    """Exact model name first, then the longest known name that prefixes ``model`` + ``-``."""
    if provider in IN_PROCESS_PROVIDERS:
        return Price(0.0, 0.0)
    models = (table if table is not None else price_table()).get(provider, {})
    if model in models:
        return models[model]
    candidates = [name for name in models if model.startswith(name + "-")]
    return models[max(candidates, key=len)] if candidates else None


def resolve_price(
    provider: str,
    model: str,
    input_override: float | None = None,
    output_override: float | None = None,
    *,
    delivery: str = "sync",
) -> Price | None:
    """The price a role pays: overrides win (whatever the delivery: a negotiated rate is the
    rate), a half-given override keeps the table's other half; ``delivery=batch`` reads the
    table's batch rates. An input override leaves the cache's rates unknown (charged at the
    overridden input rate); an output-only override keeps the table's cache rates."""
    table = lookup_price(provider, model)
    base = table.for_delivery(delivery) if table is not None else None
    if provider in IN_PROCESS_PROVIDERS:
        base = table
    if input_override is None and output_override is None:
        return base
    if base is None and (input_override is None or output_override is None):
        return None
    keep_cache = input_override is None and base is not None
    return Price(
        input_override if input_override is not None else base.input_per_mtok,  # type: ignore[union-attr]
        output_override if output_override is not None else base.output_per_mtok,  # type: ignore[union-attr]
        cached_input_per_mtok=base.cached_input_per_mtok if keep_cache else None,  # type: ignore[union-attr]
        cache_write_per_mtok=base.cache_write_per_mtok if keep_cache else None,  # type: ignore[union-attr]
    )
