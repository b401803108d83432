"""Per-image latency and memory of the whole perception toolkit on CPU, models warm.

Every configuration runs in a fresh subprocess (clean thread pools, clean peak-RSS), which loads
the models, makes one untimed warm-up pass over the bundled samples (onnxruntime specialises
kernels on first use of each input shape), then times ``perceive`` on every sample ``--repeats``
times. Reported: median and p95 of the per-image latency (image load + all tools), the median
per tool, model load time, and peak RSS. No store: this measures compute, not the cache.

A configuration ``TxW`` means T intra-op threads per model (onnxruntime sessions, torch and
OMP) and W tools running at once. ``1x1`` is one core's worth of work; ``2x1`` and ``1x2`` are
two ways of using two cores. Target: median under 400 ms per image.

Run from the repository root::

    python benchmarks/bench_perception.py                   # 1x1 2x1 1x2, 3 repeats
    python benchmarks/bench_perception.py --configs 1x1 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py
from machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
IMAGE_SUFFIXES = (".jpg", ".png")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ---------------------------------------------------------------------- child: one configuration
def run_child(threads: int, workers: int, repeats: int) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from agents.perception.toolkit import Toolkit

    images = sorted(p for p in SAMPLES.iterdir() if p.suffix in IMAGE_SUFFIXES)
    start = time.perf_counter()
    toolkit = Toolkit(threads=threads, workers=workers)
    load_errors = toolkit.warm_up()
    load_s = time.perf_counter() - start
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for image in images:  # warm-up pass, untimed
        toolkit.perceive(image)
    latencies: list[float] = []
    per_tool: dict[str, list[float]] = {}
    per_image: dict[str, list[float]] = {}
    for _ in range(repeats):
        for image in images:
            begin = time.perf_counter()
            evidence = toolkit.perceive(image)
            elapsed = (time.perf_counter() - begin) * 1000.0
            latencies.append(elapsed)
            per_image.setdefault(image.name, []).append(elapsed)
            for tool, ms in evidence.timings_ms.items():
                per_tool.setdefault(tool, []).append(ms)
    toolkit.close()
    return {
        "config": f"{threads}x{workers}",
        "threads": threads,
        "workers": workers,
        "images": len(images),
        "repeats": repeats,
        "median_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
        "per_tool_median_ms": {t: round(statistics.median(v), 1) for t, v in per_tool.items()},
        "per_image_median_ms": {n: round(statistics.median(v), 1) for n, v in per_image.items()},
        "load_s": round(load_s, 2),
        "rss_after_load_mib": round(rss_loaded, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tools_missing": load_errors,
    }


# ---------------------------------------------------------------------- parent: all configurations
def run_config(config: str, repeats: int) -> dict[str, object]:
    threads, workers = (int(x) for x in config.lower().split("x"))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
    }
    command = [
        sys.executable, __file__, "--child",
        "--threads", str(threads), "--workers", str(workers), "--repeats", str(repeats),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"configuration {config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_report(results: list[dict[str, object]], command: str) -> None:
    tools = sorted({t for r in results for t in r["per_tool_median_ms"]})  # type: ignore[union-attr]
    print(f"\nperception toolkit, {results[0]['images']} bundled samples x {results[0]['repeats']}"
          f" repeats, models warm; {cpu_name()}, {os.cpu_count()} CPUs")  # fmt: skip
    header = [
        "config",
        "median ms",
        "p95 ms",
        *[f"{t} ms" for t in tools],
        "load s",
        "peak RSS MiB",
    ]
    rows = []
    for r in results:
        per_tool = r["per_tool_median_ms"]
        rows.append(
            [
                str(r["config"]),
                f"{r['median_ms']:.0f}",
                f"{r['p95_ms']:.0f}",
                *[f"{per_tool.get(t, float('nan')):.0f}" for t in tools],  # type: ignore[union-attr]
                f"{r['load_s']:.1f}",
                f"{r['peak_rss_mib']:.0f}",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    missing = {k: v for r in results for k, v in r["tools_missing"].items()}  # type: ignore[union-attr]
    for tool, reason in missing.items():
        print(f"  (tool {tool} did not run: {reason})")
    print(
        "config TxW = T intra-op threads per model, W tools at once; per-tool columns are medians"
    )
    print(f"reproduce: {command}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["1x1", "2x1", "1x2"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.threads, args.workers, args.repeats)))
        return 0
    results = [run_config(config, args.repeats) for config in args.configs]
    command = "python benchmarks/bench_perception.py --configs " + " ".join(args.configs)
    command += f" --repeats {args.repeats}"
    print_report(results, command)
    if args.json:
        report = {"cpu": cpu_name(), "cpus": os.cpu_count(), "command": command, "results": results}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
