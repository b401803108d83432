"""The llama.cpp prefix-state cache: its setting and how it attaches (no model needed)."""

from __future__ import annotations

from typing import Any

import pytest

from agents.models.base import ProviderError
from agents.models.llama_prefix_cache import CACHE_ENV, attach_prefix_cache, cache_megabytes

pytest.importorskip("llama_cpp")


class _Llama:
    """The two members ``attach_prefix_cache`` touches."""

    def __init__(self) -> None:
        self.cache: Any = None

    def set_cache(self, cache: Any) -> None:
        self.cache = cache


def test_setting_defaults_and_rejects_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_megabytes() == 1024
    monkeypatch.setenv(CACHE_ENV, "0")
    assert cache_megabytes() == 0
    for bad in ("lots", "-1"):
        monkeypatch.setenv(CACHE_ENV, bad)
        with pytest.raises(ProviderError, match=CACHE_ENV):
            cache_megabytes()


def test_attaches_a_bounded_cache_and_a_light_save() -> None:
    llama = _Llama()
    assert attach_prefix_cache(llama, megabytes=8)
    assert llama.cache.capacity_bytes == 8 << 20
    assert llama.save_state.__func__.__name__ == "_save_state_without_scores"


def test_zero_turns_it_off() -> None:
    llama = _Llama()
    assert not attach_prefix_cache(llama, megabytes=0)
    assert llama.cache is None and not hasattr(llama, "save_state")
