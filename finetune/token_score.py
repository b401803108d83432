"""The paper's yes/no score from an API's token log-probabilities (``icm moderate --model SPEC``).

The paper scores a model by the softmax over the logits of one "Yes" and one "No" token at the
answer's first position (its ICM-Val script: ``logit_yes``, ``logit_no``). A local model gives
the logits themselves (``finetune.moderate``); an API that returns log-probabilities (OpenAI
Chat Completions ``logprobs: true, top_logprobs: N``, and the servers that copy it) gives the
log-softmax of the same logits over the whole vocabulary for the top N tokens. The softmax over
two tokens is unchanged by that normalisation: ``exp(lp_yes) / (exp(lp_yes) + exp(lp_no))``.

The answer's position is the first answer token that *is* "Yes" or "No" (for a JSON answer
``{"answer": "Yes"}`` the token after the opening quote). Only those exact tokens count: a
sub-word such as "Y" or a spelling such as " yes" is another token, as in the paper. Where the
API returned no log-probabilities, or not both tokens among the top N, there is no score and
the reason says which: never a default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

YES, NO = "Yes", "No"


@dataclass(frozen=True)
class TokenScore:
    """The score, or None with the reason it is absent."""

    score: float | None
    note: str | None = None
    logprob_yes: float | None = None
    logprob_no: float | None = None


def yes_no_score(logprobs: Sequence[dict[str, Any]] | None) -> TokenScore:
    """The softmax over the "Yes" and "No" tokens' log-probabilities at the answer position."""
    if not logprobs:
        return TokenScore(None, "no token log-probabilities: the API returned none")
    position = next((t for t in logprobs if t.get("token") in (YES, NO)), None)
    if position is None:
        return TokenScore(None, "no answer token is exactly 'Yes' or 'No'")
    candidates = {c.get("token"): c.get("logprob") for c in position.get("top_logprobs") or []}
    candidates.setdefault(position["token"], position.get("logprob"))
    yes, no = candidates.get(YES), candidates.get(NO)
    if yes is None or no is None:
        missing = YES if yes is None else NO
        shown = len(position.get("top_logprobs") or [])
        return TokenScore(None, f"'{missing}' is not among the top {shown} log-probabilities")
    return TokenScore(_sigmoid(float(yes) - float(no)), None, yes, no)


def _sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow: APIs report an all but impossible token as -9999."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
