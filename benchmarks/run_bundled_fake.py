"""Generate the bundled samples (data/samples/manifest.jsonl: 14 images, three policies, every
rule variant) against the fake OpenAI-compatible server of the tests, with one category's
explainer always wrong so one sample ends rejected: a small, offline store to try
``icm dataset``, ``icm export --format hf`` (its dataset card) and ``icm view`` on.

Run from the repository root::

    python benchmarks/run_bundled_fake.py runs/bundled-fake.duckdb
    python -m graphs.cli dataset bundled-fake --db runs/bundled-fake.duckdb --out runs/dataset
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fakes import FakeOpenAIServer  # noqa: E402
from fakes.icm_responder import ICMResponder  # noqa: E402

from graphs.config import load_config  # noqa: E402
from graphs.runner import GenerationRun  # noqa: E402

FAST = {"all": {"jitter": "false", "backoff_base_s": "0", "max_retries": "6"}}
REJECTED = "sexy_imagetext"  # teasing_meme.png: its explainer argues the wrong verdict


def main(argv: list[str]) -> int:
    db = Path(argv[0]) if argv else ROOT / "runs" / "bundled-fake.duckdb"
    responder = ICMResponder(faults={REJECTED: {"explainer": 99}})
    with FakeOpenAIServer(responder=responder) as server:
        options = {
            "manifest": ROOT / "data" / "samples" / "manifest.jsonl",
            "db": db,
            "roles": {"all": f"openai-compatible:{server.base_url}#fake-model"},
            "role_settings": FAST,
            "perception": False,
            "run": "bundled-fake",
        }
        summary = asyncio.run(GenerationRun(load_config(None, options)).run())
    print(f"{db}: run bundled-fake {summary.counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
