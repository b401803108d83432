"""Timeouts by kind of endpoint, and a deadline per call across its retries.

One default did not fit: 60 s per request and 4 retries let a hung endpoint cost 5 minutes per
call (60 s x 5 attempts plus backoff), and a run of thousands of calls never visibly ends. The
kind of endpoint says what is normal:

========== =========================== ============== =============================
kind       specs                       per request    per call (retries included)
========== =========================== ============== =============================
hosted     ``openai:``, ``anthropic:`` 60 s           120 s
self-hosted ``openai-compatible:``     90 s           120 s
in-process ``local:``, ``hf:``         600 s          600 s
========== =========================== ============== =============================

Hosted APIs answer a structured call in seconds; a minute without an answer is a fault, and
two minutes covers one slow answer plus a retry. A self-hosted server may be a CPU llama.cpp
writing 10 tokens a second, so one request gets longer, but the call's total stays two minutes:
a hung server costs at most that per call. In-process generation has no network to hang on;
its bound is the time a CPU may take to write ``max_tokens`` (local providers stop generating
at the deadline). ``timeout_s`` and ``call_deadline_s`` set either explicitly (a role setting
or a spec option) always win, and a default deadline never cuts one request below an explicit
``timeout_s`` (the offline demo sets ``timeout_s: 900`` for CPU generation).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

EndpointKind = Literal["hosted", "self-hosted", "in-process"]


class Timeouts(NamedTuple):
    request_s: float
    call_s: float


DEFAULT_TIMEOUTS: dict[EndpointKind, Timeouts] = {
    "hosted": Timeouts(60.0, 120.0),
    "self-hosted": Timeouts(90.0, 120.0),
    "in-process": Timeouts(600.0, 600.0),
}


def endpoint_kind(provider: str) -> EndpointKind:
    """The kind of endpoint a spec's provider talks to."""
    if provider in ("hf", "local"):
        return "in-process"
    if provider == "openai-compatible":
        return "self-hosted"
    return "hosted"
