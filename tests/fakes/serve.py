"""Serve a fake OpenAI-compatible endpoint from the command line (for benchmarks and dry runs).

    python tests/fakes/serve.py --latency-ms 50 --responder icm

prints ``READY <base_url>`` on stdout once listening, then serves until killed. Loopback only.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--responder",
        choices=["icm", "schema"],
        default="icm",
        help="icm: plays every generation role; schema: schema-valid filler",
    )
    args = parser.parse_args()
    responder = ICMResponder() if args.responder == "icm" else None
    server = FakeOpenAIServer(responder=responder, latency_s=args.latency_ms / 1000).start()
    print(f"READY {server.base_url}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
