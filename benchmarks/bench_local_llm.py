"""Speed of ``local:smollm2`` under grammar-constrained decoding (CPU), per decoding option.

Each configuration runs in a fresh subprocess (clean RSS, clean thread pools): load the model
(from the converted checkpoint cache; ``--cold`` adds one run that parses the GGUF), compile the
agents' schemas, then answer five agent-shaped prompts (description, context, explanation, a
1+1+1+1 Q-A set, critique; ``max_tokens`` 300) twice through the provider. Reported per
configuration, median over repeats (runs are interleaved so machine noise hits all alike):

- ``first_s``: load + grammar compile + the first answer (what the first call of a run costs);
- ``tok_s``: output tokens per second of generation over the warm calls (prefill included);
- ``step_ms``: median time of one single-token forward pass; ``prefill_ms_tok``: per prompt token;
- ``forced``: share of output tokens fed by jump-forward; ``valid``: answers that validate;
- ``rss_mb``: peak resident memory of the process.

Options compared: ``threads`` (``ICM_TORCH_THREADS``), ``half`` (fp16 linear weights,
``ICM_HALF_WEIGHTS``), ``jump`` (jump-forward over grammar-forced text). On a shared machine use
one thread: with other processes busy, two torch threads were 10-100x slower here.

Run from the repository root::

    python benchmarks/bench_local_llm.py                      # 1 thread, 4 configs x 3 repeats
    python benchmarks/bench_local_llm.py --threads 1,2 --repeats 2 --cold --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE = (
    "Perception evidence: person (0.91), ImageNet 'assault rifle' (0.62), outdoor field, "
    "daylight, no exposed skin. Annotation: weapon, not in use."
)


def _workload():
    from agents import schemas
    from agents.critic import critique_schema
    from agents.models.base import Message

    def ask(system: str, user: str) -> list[Message]:
        return [Message("system", system), Message("user", f"{EVIDENCE} {user}")]

    return [
        (schemas.Description, ask("You describe images for moderation.", "Describe the image.")),
        (schemas.Context, ask("You interpret images' context.", "Interpret the context.")),
        (
            schemas.explanation_model(("allowed", "not allowed")),
            ask("You explain verdicts for children under 13.", "Rule: weapons not in use are ok."),
        ),
        (
            schemas.qa_model(1, 1, 1, 1),
            ask("You write question-answer pairs about an image.", "Verdict: allowed."),
        ),
        (critique_schema(), ask("You check a sample for consistency.", "Verdict: allowed.")),
    ]


def child(config: dict) -> dict:
    """One configuration in this process; returns its measurements."""
    os.environ["ICM_TORCH_THREADS"] = str(config["threads"])
    os.environ["ICM_HALF_WEIGHTS"] = "1" if config["half"] else "0"
    if config.get("cold"):
        os.environ["ICM_MODEL_CACHE_DIR"] = tempfile.mkdtemp(prefix="icm-cold-")
    from agents.models import local_loading
    from agents.models.base import GenerationParams
    from agents.models.providers import local_transformers
    from agents.models.settings import RoleSettings
    from agents.models.spec import parse_spec

    if not config["jump"]:
        local_transformers.decode = functools.partial(local_transformers.decode, jump_forward=False)
    local_loading.apply_thread_setting()
    workload = _workload()
    started = time.perf_counter()
    local = local_loading.load_smollm2()
    load_s = time.perf_counter() - started
    compile_started = time.perf_counter()
    local.grammar.compile(workload[0][0])
    compile_s = time.perf_counter() - compile_started

    steps: list[float] = []
    prefill: list[float] = []
    first_of_call = [True]  # the first forward of a call is the prompt; later wide ones jump
    forward = local.model.forward

    def timed(*args, **kwargs):
        began = time.perf_counter()
        out = forward(*args, **kwargs)
        width = kwargs["input_ids"].shape[1]
        elapsed = time.perf_counter() - began
        if first_of_call[0]:
            prefill.append(elapsed / width)
            first_of_call[0] = False
        elif width == 1:
            steps.append(elapsed)
        return out

    local.model.forward = timed
    provider = local_transformers.make_local_provider(parse_spec("local:smollm2"), RoleSettings())
    params = GenerationParams(temperature=0.0, max_tokens=300)

    async def run() -> list[dict]:
        rows = []
        for schema, messages in workload * 2:
            first_of_call[0] = True
            began = time.perf_counter()
            response = await provider.complete(messages, schema, params, None)
            try:
                schema.model_validate_json(response.raw_text)
                valid = True
            except ValueError:
                valid = False
            rows.append(
                {
                    "wall_s": time.perf_counter() - began,
                    "gen_s": response.extra["generation_s"],
                    "out": response.output_tokens,
                    "forced": response.extra.get("forced_tokens", 0),
                    "finish": response.finish_reason,
                    "valid": valid,
                }
            )
        return rows

    rows = asyncio.run(run())
    warm = rows[len(workload) :]
    out_tokens = sum(r["out"] for r in warm)
    return config | {
        "load_s": round(load_s, 2),
        "compile_s": round(compile_s, 3),
        "first_s": round(load_s + compile_s + rows[0]["wall_s"], 2),
        "tok_s": round(out_tokens / sum(r["gen_s"] for r in warm), 1),
        "step_ms": round(1000 * statistics.median(steps), 1),
        "prefill_ms_tok": round(1000 * statistics.median(prefill), 2),
        "forced": round(sum(r["forced"] for r in warm) / out_tokens, 2),
        "valid": f"{sum(r['valid'] for r in rows)}/{len(rows)}",
        "lengths": [r["out"] for r in warm],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="add one run that parses the GGUF")
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    configs = [
        {"threads": int(t), "half": half, "jump": jump}
        for t, half, jump in itertools.product(
            args.threads.split(","), (True, False), (True, False)
        )
    ]
    plan = [c for _ in range(args.repeats) for c in configs]
    if args.cold:
        plan.append({"threads": 1, "half": True, "jump": True, "cold": True})
    runs = []
    for config in plan:
        done = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    load, cpus = os.getloadavg()[0], os.cpu_count()
    print(f"\nmedians over {args.repeats} runs (load average now {load:.1f}, {cpus} cpus)")
    keys = ("first_s", "tok_s", "step_ms", "prefill_ms_tok", "forced", "rss_mb")
    print(f"{'threads half  jump':20s}" + "".join(f"{k:>15s}" for k in keys))
    for config in configs + ([plan[-1]] if args.cold else []):
        same = [
            r
            for r in runs
            if all(r.get(k) == v for k, v in config.items())
            and r.get("cold", False) == config.get("cold", False)
        ]
        cells = "".join(f"{statistics.median(r[k] for r in same):15.2f}" for k in keys)
        label = f"{config['threads']:>7} {config['half']!s:>5} {config['jump']!s:>5}"
        print(f"{label + (' cold' if config.get('cold') else ''):20s}{cells}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
