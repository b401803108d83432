"""Fine-tune throughput: our trainer vs TRL's SFTTrainer on icm-tiny (CPU), and the GPU check.

**CPU (default)**: icm-tiny (EfficientNet-Lite0 -> MLP -> SmolLM2-135M + LoRA r16 on all seven
projections, projector trained, fp32), trained on the bundled sample images with ICM-shaped
conversations built from the policies (each image under each rule variant: the rule question,
an explanation from the rule table's reason, the verdict Q-A). Three trainers on the same data,
model, LoRA config, batch size, optimizer (AdamW), schedule (cosine), clipping and steps:

- ``ours``: ``finetune.train.Trainer`` as shipped (LM head only where labels exist);
- ``ours-full-logits``: the same with ``train.loss_on_labels_only=false`` (full logits, as TRL);
- ``trl``: ``trl.SFTTrainer`` given the same peft model and our collator (so both see identical
  batches: only the training loop differs; TRL's own VLM collator does not know icm-tiny);
- ``baseline``: ``ours`` imported from another checkout (``--baseline-root``, e.g. the revision
  before a change to the trainer), timed exactly as ``ours``: the side-by-side check of a
  rewrite (``--trainers ours baseline``).

Each run is a fresh subprocess (clean RSS, clean thread pools); runs are interleaved, repeated,
and the median is reported. Throughput counts non-padding tokens (image tokens included) of
the optimizer steps after the first (warm-up), over their wall time, and over the process's CPU
time (robust to other load on a shared machine; with ``--threads 1`` it is the work done).
Peak RSS is the process peak (model build included).

**GPU (``--gpu``)**: a config-built Qwen2-VL at Qwen2-VL-2B's shapes (random weights), bf16,
LoRA as above, our trainer, synthetic 448x448 images (256 image tokens) and ~200 text tokens
per example. Reports tokens/s and model FLOPs utilisation, MFU = 6 * N * tokens/s / peak, with
N the model's parameter count and peak the card's dense bf16 rate (H100/H200 SXM: 989 TFLOP/s).
6N is the full fine-tuning convention; LoRA skips the frozen weights' gradients (~4N), so the
hardware does less than 6N per token and MFU(6N) overstates utilisation by up to 1.5x; both
are printed. ``--size tiny`` runs the same path on CPU in seconds (the test suite does).

Run from the repository root::

    python benchmarks/bench_finetune.py                    # CPU: 3 trainers x 3 repeats, 1 thread
    python benchmarks/bench_finetune.py --repeats 5 --steps 8 --json out.json
    python benchmarks/bench_finetune.py --trainers ours baseline --baseline-root ../main
    python benchmarks/bench_finetune.py --gpu              # on a GPU machine (~2 min)
    python benchmarks/bench_finetune.py --gpu --size tiny  # the same path, CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py
from machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data" / "samples"
TRAINERS = ("ours", "ours-full-logits", "trl", "baseline")
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------- data
def icm_examples() -> list[Any]:
    """Each bundled image under each rule of its policy: the conversation shape of an export."""
    from agents.explainer import rule_question
    from data.policy import load_policy
    from finetune.collate import Example

    out = []
    for line in (SAMPLES / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        policy = load_policy(row["policy"])
        for rule in policy.rules:
            ruling = policy.ruling(row["category"], rule)
            explanation = (
                f"The image shows: {row['shows']} {ruling.reason} Under rule {rule} the image is "
                f"{ruling.verdict}."
            )
            verdict_q = rule_question(policy, rule).removesuffix(" Explain why.")
            answer = "Yes." if policy.is_flagged(ruling.verdict) else "No."
            turns = (
                ("user", rule_question(policy, rule)),
                ("assistant", explanation),
                ("user", verdict_q),
                ("assistant", answer),
                ("user", "What does the image show?"),
                ("assistant", row["shows"]),
            )
            image = row["image"]
            out.append(Example(f"{image}-{rule}", str(SAMPLES / image), turns, group=image))
    return out


def synthetic_examples(n: int, size: int, folder: Path) -> list[Any]:
    """Random-noise images and ICM-shaped text (the GPU check's data)."""
    import numpy as np
    from PIL import Image

    from finetune.collate import Example

    rng = np.random.default_rng(0)
    out = []
    question = (
        "Under rule R1 (audience: under 13, conservative culture), is the image sexy? Explain why."
    )
    answer = (
        "The image is not sexy for this audience: it shows a person fully covered, nothing "
        "suggestive in pose or text, and the rule allows ordinary covering clothes. " * 4
    )
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        turns = (
            ("user", question),
            ("assistant", answer),
            ("user", "Is it sexy?"),
            ("assistant", "No."),
        )
        out.append(Example(f"s{i}", str(path), turns, group=str(i)))
    return out


# ---------------------------------------------------------------------- child: one CPU run
def child_cpu(
    trainer: str, steps: int, batch_size: int, max_length: int, threads: int, root: Path = ROOT
) -> dict:
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(root))  # the checkout whose finetune package is timed
    from finetune.config import FinetuneConfig
    from finetune.train import Trainer

    examples = icm_examples()
    out_dir = Path(tempfile.mkdtemp(prefix="bench-ft-"))
    settings = [
        "model.name_or_path=icm-tiny",
        "data.files=[bench]",
        f"data.max_length={max_length}",
        f"train.output_dir={out_dir}",
        f"train.max_steps={steps}",
        f"train.batch_size={batch_size}",
        "train.grad_accum=1",
        "train.learning_rate=2e-4",
        "train.warmup_ratio=0",
        "train.scheduler=cosine",
        "train.max_grad_norm=1.0",
        "train.record=false",
        "train.eval_steps=0",
        "lora.r=16",
        "lora.alpha=32",
        "lora.dropout=0.05",
        f"train.loss_on_labels_only={'false' if trainer == 'ours-full-logits' else 'true'}",
    ]
    config = FinetuneConfig.load(None, settings)
    started = time.perf_counter()
    ours = Trainer(config, train_examples=examples, val_examples=[])
    load_seconds = time.perf_counter() - started
    marks: list[tuple[float, float, int]] = []  # (wall, process CPU time, tokens so far)
    if trainer == "trl":
        result = _run_trl(ours, config, steps, marks)
    else:

        def progress(message: str) -> None:
            if message.startswith("step ") and " train " in message:
                tokens = int(message.rsplit("tokens ", 1)[1])
                marks.append((time.perf_counter(), time.process_time(), tokens))

        ours.progress = progress
        ours.run()
        result = {"final_loss": ours.history[-1]["loss"]}
    (t0, c0, k0), (t1, c1, k1) = marks[0], marks[-1]
    return {
        "trainer": trainer,
        "steps": len(marks),
        "tokens": k1 - k0,
        "seconds": t1 - t0,
        "cpu_seconds": c1 - c0,
        "tokens_per_second": (k1 - k0) / (t1 - t0),
        "tokens_per_cpu_second": (k1 - k0) / (c1 - c0),
        "peak_rss_bytes": peak_rss(),
        "load_seconds": load_seconds,
        **result,
    }


def _run_trl(ours: Any, config: Any, steps: int, marks: list) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    examples = ours.train_examples
    tokens = [0]

    def collate(features: list[dict]) -> dict:
        batch = ours.collator([examples[f["idx"]] for f in features])
        tokens[0] += int(batch["attention_mask"].sum())
        batch.pop("n_image_tokens", None)
        return batch

    class Marks(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks.append((time.perf_counter(), time.process_time(), tokens[0]))

    t = config.train
    args = SFTConfig(
        output_dir=t.output_dir,
        max_steps=steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=t.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        max_grad_norm=t.max_grad_norm,
        weight_decay=0.0,
        optim="adamw_torch",
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        use_cpu=True,
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
        seed=t.seed,
        activation_checkpointing=False,  # TRL turns it on by default; ours runs without
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=ours.model,
        args=args,
        train_dataset=Dataset.from_dict({"idx": list(range(len(examples)))}),
        data_collator=collate,
        processing_class=ours.loaded.processor.tokenizer,
    )
    trainer.add_callback(Marks())
    ours.model.train()
    out = trainer.train()
    return {
        "final_loss": float(out.training_loss),
        "activation_checkpointing": bool(trainer.args.activation_checkpointing),
    }


def run_child(args: list[str]) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_main(args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in args.trainers}
    for repeat in range(args.repeats):
        for name in args.trainers:  # interleaved: drifting machine load hits all alike
            root = args.baseline_root if name == "baseline" else ROOT
            result = run_child(
                [name, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                 "--max-length", str(args.max_length), "--threads", str(args.threads),
                 "--root", str(root)]
            )  # fmt: skip
            runs[name].append(result)
            print(
                f"  repeat {repeat + 1} {name:17s} {result['tokens_per_second']:8.1f} tok/s "
                f"{result['tokens_per_cpu_second']:8.1f} tok/cpu-s "
                f"rss {result['peak_rss_bytes'] / 2**20:7.0f} MiB loss {result['final_loss']:.3f}",
                file=sys.stderr,
            )
    summary = {}
    for name, results in runs.items():
        summary[name] = {
            "tokens_per_second_median": statistics.median(r["tokens_per_second"] for r in results),
            "tokens_per_second_all": [round(r["tokens_per_second"], 2) for r in results],
            "tokens_per_cpu_second_median": statistics.median(
                r["tokens_per_cpu_second"] for r in results
            ),
            "peak_rss_mib_median": statistics.median(r["peak_rss_bytes"] for r in results) / 2**20,
            "final_loss_median": statistics.median(r["final_loss"] for r in results),
        }
    if "ours" in summary and "trl" in summary:
        summary["ratio_ours_over_trl"] = (
            summary["ours"]["tokens_per_second_median"] / summary["trl"]["tokens_per_second_median"]
        )
        summary["cpu_time_ratio_ours_over_trl"] = (
            summary["ours"]["tokens_per_cpu_second_median"]
            / summary["trl"]["tokens_per_cpu_second_median"]
        )
    if "ours" in summary and "baseline" in summary:
        summary["ratio_ours_over_baseline"] = (
            summary["ours"]["tokens_per_second_median"]
            / summary["baseline"]["tokens_per_second_median"]
        )
        summary["cpu_time_ratio_ours_over_baseline"] = (
            summary["ours"]["tokens_per_cpu_second_median"]
            / summary["baseline"]["tokens_per_cpu_second_median"]
        )
    if "ours-full-logits" in summary and "trl" in summary:
        summary["ratio_ours_full_logits_over_trl"] = (
            summary["ours-full-logits"]["tokens_per_second_median"]
            / summary["trl"]["tokens_per_second_median"]
        )
    return summary


# ---------------------------------------------------------------------- GPU check
def gpu_main(args: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from finetune import synthetic
    from finetune.config import FinetuneConfig
    from finetune.train import Trainer

    cuda = torch.cuda.is_available()
    if args.size == "2b" and not cuda:
        raise SystemExit("--gpu --size 2b needs a CUDA GPU; use --size tiny on CPU")
    if not cuda:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    started = time.perf_counter()
    model_dir = synthetic.build_saved("qwen2_vl", work / "model", size=args.size)
    build_seconds = time.perf_counter() - started
    image_size = 448 if args.size == "2b" else 56
    steps = args.steps
    batch = args.batch_size
    examples = synthetic_examples(batch * (steps + 1), image_size, work)
    settings = [
        f"model.name_or_path={model_dir}",
        f"model.dtype={'bf16' if cuda else 'fp32'}",
        "model.attn_implementation=sdpa",
        "data.files=[bench]",
        "data.max_length=2048",
        f"train.output_dir={work / 'out'}",
        f"train.max_steps={steps}",
        f"train.batch_size={batch}",
        "train.record=false",
        "train.eval_steps=0",
        "train.warmup_ratio=0",
        f"train.gradient_checkpointing={'true' if args.checkpointing else 'false'}",
        "lora.r=16",
        "lora.alpha=32",
        f"train.num_workers={4 if cuda else 0}",
    ]
    config = FinetuneConfig.load(None, settings)
    trainer = Trainer(config, train_examples=examples, val_examples=[])
    marks: list[tuple[float, int]] = []

    def progress(message: str) -> None:
        if message.startswith("step ") and " train " in message:
            if cuda:
                torch.cuda.synchronize()
            marks.append((time.perf_counter(), int(message.rsplit("tokens ", 1)[1])))

    trainer.progress = progress
    result = trainer.run()
    warm = min(2, len(marks) - 2)
    (t0, k0), (t1, k1) = marks[warm], marks[-1]
    tokens_per_second = (k1 - k0) / (t1 - t0)
    params = sum(p.numel() for p in trainer.model.parameters())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    device = torch.cuda.get_device_name(0) if cuda else cpu_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in device), None)
    out = {
        "device": device,
        "size": args.size,
        "parameters": params,
        "trainable_parameters": trainable,
        "batch_size": batch,
        "tokens_per_example": round(result.tokens / (steps * batch)),
        "steps_timed": len(marks) - 1 - warm,
        "tokens_per_second": tokens_per_second,
        "peak_memory_gib": result.peak_memory_bytes / 2**30,
        "build_seconds": build_seconds,
        "final_loss": result.train_loss,
        "gradient_checkpointing": args.checkpointing,
    }
    if peak:
        out["peak_bf16_flops"] = peak
        out["mfu_6n"] = 6 * params * tokens_per_second / peak
        out["mfu_4n_lora"] = 4 * params * tokens_per_second / peak
    return out


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)"
    )
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS)
    parser.add_argument("--gpu", action="store_true", help="the GPU check (Qwen2-VL-2B shapes)")
    parser.add_argument("--size", choices=("2b", "tiny"), default="2b")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--baseline-root",
        type=Path,
        default=ROOT.parent / "main",
        help="checkout whose finetune package the 'baseline' trainer imports",
    )
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.child is not None:
        result = child_cpu(
            args.child, args.steps or 6, args.batch_size or 2, args.max_length, args.threads,
            args.root.resolve(),
        )  # fmt: skip
        print(json.dumps(result))
        return 0
    if args.gpu:
        args.steps = args.steps or (12 if args.size == "2b" else 4)
        args.batch_size = args.batch_size or (8 if args.size == "2b" else 2)
        results = gpu_main(args)
        command = "python benchmarks/bench_finetune.py --gpu " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--gpu"
        )
        r = results
        print(
            f"\nGPU check: {r['device']}, Qwen2-VL ({args.size}) config-built, "
            f"{r['parameters'] / 1e9:.2f}B parameters "
            f"({r['trainable_parameters'] / 1e6:.1f}M trained)"
        )
        print(
            f"  tokens/s {r['tokens_per_second']:.0f}, peak memory {r['peak_memory_gib']:.1f} GiB, "
            f"batch {args.batch_size} x {r['tokens_per_example']} tokens"
        )
        if "mfu_6n" in r:
            print(f"  MFU {r['mfu_6n']:.1%} (6N convention), {r['mfu_4n_lora']:.1%} (4N, LoRA)")
    else:
        args.steps = args.steps or 6
        args.batch_size = args.batch_size or 2
        print(
            f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch threads {args.threads}; icm-tiny, "
            f"batch {args.batch_size}, max_length {args.max_length}, {args.steps} steps (first "
            f"excluded), {args.repeats} repeats",
            file=sys.stderr,
        )
        results = cpu_main(args)
        command = "python benchmarks/bench_finetune.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        print("\n| trainer | tokens/s (median) | runs | tokens/CPU-s | peak RSS MiB | final loss |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name in args.trainers:
            r = results[name]
            print(
                f"| {name} | {r['tokens_per_second_median']:.1f} | {r['tokens_per_second_all']} "
                f"| {r['tokens_per_cpu_second_median']:.1f} | {r['peak_rss_mib_median']:.0f} "
                f"| {r['final_loss_median']:.3f} |"
            )
        if "ratio_ours_over_baseline" in results:
            print(
                f"\nratio ours / baseline ({args.baseline_root}): "
                f"{results['ratio_ours_over_baseline']:.3f} wall, "
                f"{results['cpu_time_ratio_ours_over_baseline']:.3f} CPU time"
            )
        if "ratio_ours_over_trl" in results:
            ratio = results["ratio_ours_over_trl"]
            cpu_ratio = results["cpu_time_ratio_ours_over_trl"]
            print(
                f"\nratio ours / TRL SFTTrainer: {ratio:.2f} wall, {cpu_ratio:.2f} CPU time "
                "(target >= 1.0)"
            )
    print(f"\ncommand: {command.strip()}")
    payload = {"command": command.strip(), "results": results}
    print(json.dumps(payload, default=str))
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
