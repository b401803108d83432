"""The fine-tune stage on config-built LLaVA, Qwen2-VL and Idefics3 models (random weights).

Each family is built from a config alone (hidden 64, 2 layers, vision hidden 32), saved to a
folder and loaded back through the same path a downloaded checkpoint takes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from finetune import synthetic
from finetune.collate import IGNORE, ChatEncoder, Collator, Example, TooLongError, model_inputs
from finetune.config import FinetuneConfig
from finetune.families import detect_family, expected_image_tokens, load_processor
from finetune.loading import load_base, load_for_inference
from finetune.train import Trainer, hf_model, latest_checkpoint

FAMILIES = ["llava", "qwen2_vl", "idefics3"]
ANSWERS = ("No, it is not.", "Nothing in it is suggestive.")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, size in enumerate([(50, 40), (90, 30), (30, 60), (64, 64)]):
        path = folder / f"{i}.png"
        Image.new("RGB", size, (40 * i, 90, 160)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module", params=FAMILIES)
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.build_saved(request.param, tmp_path_factory.mktemp(request.param) / "model")


def examples(images: list[str]) -> list[Example]:
    out = [
        Example(
            "two-turns",
            images[0],
            (
                ("user", "Is the image sexy?"),
                ("assistant", ANSWERS[0]),
                ("user", "Why?"),
                ("assistant", ANSWERS[1]),
            ),
            group="0",
        )
    ]
    for i, image in enumerate(images[1:], start=1):
        answer = "Yes." if i % 2 else "No."
        out.append(
            Example(f"e{i}", image, (("user", "Is it sexy?"), ("assistant", answer)), group=str(i))
        )
    return out


def config(model: Path, out: Path, *extra: str) -> FinetuneConfig:
    return FinetuneConfig.load(
        None,
        [f"model.name_or_path={model}", "data.files=[unused]", f"train.output_dir={out}",
         "train.record=false", "train.learning_rate=1e-2", "train.batch_size=2",
         "train.warmup_ratio=0", "lora.r=4", "lora.alpha=8", "lora.dropout=0", *extra],
    )  # fmt: skip


def test_only_assistant_tokens_carry_labels(saved: Path, images: list[str]) -> None:
    family = detect_family(saved)
    processor = load_processor(saved, family)
    loaded = load_base(str(saved))
    encoder = ChatEncoder(processor, family, loaded.model.config, max_length=512)
    encoded = encoder.encode(examples(images)[0])
    ids, labels = encoded["input_ids"], encoded["labels"]
    labelled = (labels != IGNORE).tolist()
    runs, current = [], []
    for token, on in zip(ids.tolist(), labelled, strict=True):
        if on:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    decoded = [processor.tokenizer.decode(run).strip() for run in runs]
    assert decoded == [answer + encoder.end_of_turn for answer in ANSWERS]
    # Labels equal the input ids where set (shifted inside the loss, not here).
    assert torch.equal(labels[labels != IGNORE], ids[labels != IGNORE])
    # No image token and no prompt text is labelled.
    assert not (labels == loaded.model.config.image_token_id).any()
    assert "Is the image sexy?" not in processor.tokenizer.decode(ids[labels != IGNORE])


def test_image_tokens_match_the_model(saved: Path, images: list[str]) -> None:
    loaded = load_base(str(saved))
    encoder = ChatEncoder(loaded.processor, loaded.family, loaded.model.config, max_length=512)
    batch = Collator(encoder)(examples(images))
    config = loaded.model.config
    in_ids = int((batch["input_ids"] == config.image_token_id).sum())
    assert in_ids == expected_image_tokens(loaded.family, config, batch) == batch["n_image_tokens"]
    if loaded.family.name == "llava":  # (image_size / patch)^2 per image, CLS dropped
        per_image = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
        assert in_ids == per_image * len(images)
    elif loaded.family.name == "qwen2_vl":
        assert in_ids == int(batch["image_grid_thw"].prod(-1).sum()) // 4
    # What the vision side really produces for these pixels.
    pixel_keys = {
        k: v
        for k, v in model_inputs(batch).items()
        if k not in ("input_ids", "attention_mask", "mm_token_type_ids")
    }
    with torch.no_grad():
        features = loaded.model.model.get_image_features(**pixel_keys)
    pooled = features.pooler_output
    produced = (
        sum(f.shape[0] for f in pooled)
        if isinstance(pooled, list | tuple)
        else pooled.reshape(-1, pooled.shape[-1]).shape[0]
    )
    assert produced == in_ids


def test_padding_does_not_change_the_loss(saved: Path, images: list[str]) -> None:
    loaded = load_base(str(saved))
    encoder = ChatEncoder(loaded.processor, loaded.family, loaded.model.config, max_length=512)
    collate = Collator(encoder)
    batch = collate(examples(images)[:2])
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()  # one row padded
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    single = collate(examples(images)[1:2])

    def token_losses(b: dict) -> torch.Tensor:
        with torch.no_grad():
            logits = loaded.model(**model_inputs(b)).logits[:, :-1]
        labels = b["labels"][:, 1:]
        return torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
        )

    padded = token_losses(batch)[1]
    alone = token_losses(single)[0]
    assert torch.allclose(padded[: len(alone)], alone, atol=1e-4)


def test_truncation_never_cuts_image_tokens(saved: Path, images: list[str]) -> None:
    loaded = load_base(str(saved))
    full = ChatEncoder(loaded.processor, loaded.family, loaded.model.config, 512)
    example = examples(images)[0]
    encoded = full.encode(example)
    image_id = loaded.model.config.image_token_id
    last_image = int((encoded["input_ids"] == image_id).nonzero().max())
    cut = ChatEncoder(loaded.processor, loaded.family, loaded.model.config, last_image + 3)
    shorter = cut.encode(example)
    assert len(shorter["input_ids"]) == last_image + 3
    assert shorter["n_image_tokens"] == encoded["n_image_tokens"]
    assert int((shorter["input_ids"] == image_id).sum()) == encoded["n_image_tokens"]
    with pytest.raises(TooLongError, match=r"two-turns.*max_length"):
        ChatEncoder(loaded.processor, loaded.family, loaded.model.config, last_image).encode(
            example
        )


def test_one_step_trains_lora_only_and_adapter_reloads(
    saved: Path, images: list[str], tmp_path: Path
) -> None:
    cfg = config(saved, tmp_path / "out", "train.max_steps=1", "train.merge=true")
    trainer = Trainer(cfg, train_examples=examples(images)[:2], val_examples=examples(images)[2:])
    before = {k: v.detach().clone() for k, v in hf_model(trainer.model).state_dict().items()}
    result = trainer.run()
    assert result.train_loss is not None and torch.isfinite(torch.tensor(result.train_loss))
    assert result.val_loss is not None and torch.isfinite(torch.tensor(result.val_loss))
    after = hf_model(trainer.model).state_dict()
    family = trainer.family
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("lora_B" in k for k in changed)
    assert any(family.projector[0] in k and "modules_to_save" in k for k in changed)
    for key in before:
        if "lora_" in key or "modules_to_save" in key:
            continue
        assert key not in changed, f"frozen weight {key} changed"
    # Adapter save -> reload: identical logits (and the merged model: the same up to rounding).
    encoder = ChatEncoder(trainer.loaded.processor, family, hf_model(trainer.model).config, 512)
    batch = Collator(encoder)(examples(images)[:2])
    trainer.model.eval()
    with torch.no_grad():
        reference = trainer.model(**model_inputs(batch)).logits
        reloaded = load_for_inference(str(tmp_path / "out" / "adapter"))
        again = reloaded.model(**model_inputs(batch)).logits
        merged = (
            load_for_inference(str(tmp_path / "out" / "merged")).model(**model_inputs(batch)).logits
        )
    assert torch.allclose(reference, again, atol=1e-5)
    assert torch.allclose(reference, merged, atol=1e-4)


class _Crash(Exception):
    pass


def _crash_after_step_2(message: str) -> None:
    if message.startswith("step 3 "):
        raise _Crash(message)


def test_resume_continues_exactly(images: list[str], tmp_path: Path) -> None:
    """A run killed after its step-2 checkpoint and resumed ends where an uninterrupted run does
    (weights, optimizer moments, schedule and data order all restored)."""
    model = synthetic.build_saved("llava", tmp_path / "model")
    data = examples(images)
    settings = ("train.max_steps=4", "train.save_steps=2", "train.scheduler=cosine")
    straight = Trainer(config(model, tmp_path / "a", *settings), train_examples=data)
    straight.run()
    crashed = Trainer(config(model, tmp_path / "b", *settings), train_examples=data,
                      progress=_crash_after_step_2)  # fmt: skip
    with pytest.raises(_Crash):
        crashed.run()
    assert latest_checkpoint(tmp_path / "b").name == "checkpoint-2"
    resumed = Trainer(
        config(model, tmp_path / "b", *settings, "train.resume_from=latest"), train_examples=data
    )
    result = resumed.run()
    assert result.steps == 4
    a = {k: v for k, v in hf_model(straight.model).state_dict().items() if "lora_" in k}
    b = {k: v for k, v in hf_model(resumed.model).state_dict().items() if "lora_" in k}
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert [h["step"] for h in resumed.history if h["split"] == "train"] == [1, 2, 3, 4]
    assert resumed.finetune_id == crashed.finetune_id


def test_gradient_checkpointing_and_accumulation_match(images: list[str], tmp_path: Path) -> None:
    """Two micro-batches of one with accumulation = one batch of two (loss normalised by the
    labelled tokens of the whole window), with or without gradient checkpointing."""
    model = synthetic.build_saved("llava", tmp_path / "model")
    data = examples(images)[:2]
    whole = Trainer(config(model, tmp_path / "a", "train.max_steps=1"), train_examples=data)
    whole.run()
    split = Trainer(
        config(
            model,
            tmp_path / "b",
            "train.max_steps=1",
            "train.batch_size=1",
            "train.grad_accum=2",
            "train.gradient_checkpointing=true",
        ),
        train_examples=data,
    )  # fmt: skip
    split.run()
    a = {k: v for k, v in hf_model(whole.model).state_dict().items() if "lora_" in k}
    b = {k: v for k, v in hf_model(split.model).state_dict().items() if "lora_" in k}
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_continuous_sft_continues_the_adapter_and_is_recorded(
    images: list[str], tmp_path: Path
) -> None:
    from data.store import Store

    model = synthetic.build_saved("llava", tmp_path / "model")
    db = tmp_path / "icm.duckdb"
    data = examples(images)
    first = Trainer(
        config(
            model, tmp_path / "first", "train.max_steps=2", "train.record=true", f"data.db={db}"
        ),
        train_examples=data,
    )
    first.run()
    adapter = tmp_path / "first" / "adapter"
    trained = {k: v.clone() for k, v in hf_model(first.model).state_dict().items() if "lora_" in k}
    cont = Trainer(
        config(
            model,
            tmp_path / "second",
            "train.max_steps=1",
            "train.record=true",
            f"data.db={db}",
            "train.mode=continuous",
            f"model.init_adapter={adapter}",
        ),
        train_examples=data,
    )
    start = {k: v for k, v in hf_model(cont.model).state_dict().items() if "lora_" in k}
    assert start.keys() == trained.keys()
    assert all(torch.equal(start[k], trained[k]) for k in trained)  # starts where it stopped
    cont.run()
    with Store.open(db, read_only=True) as store:
        rows = {r["mode"]: r for r in store.rows("SELECT * FROM finetune_runs")}
    assert set(rows) == {"sft", "continuous"}
    parent = json.loads(rows["continuous"]["config_json"])["parent"]
    assert parent["finetune_id"] == first.finetune_id and parent["mode"] == "sft"


def test_gpu_check_runs_at_tiny_size_on_cpu(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_finetune.py"
    spec = importlib.util.spec_from_file_location("bench_finetune", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu.json"
    assert (
        bench.main(
            ["--gpu", "--size", "tiny", "--steps", "4", "--threads", "1", "--json", str(out)]
        )
        == 0
    )
    results = json.loads(out.read_text())["results"]
    assert results["tokens_per_second"] > 0 and results["steps_timed"] >= 1
    assert results["size"] == "tiny"


@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl", "smolvlm"])
def test_other_families_label_and_train(family: str, images: list[str], tmp_path: Path) -> None:
    """LLaVA-NeXT, Qwen2.5-VL and SmolVLM: the same path, labels and one finite step."""
    model = synthetic.build_saved(family, tmp_path / "model")
    cfg = config(model, tmp_path / "out", "train.max_steps=1")
    trainer = Trainer(cfg, train_examples=examples(images)[:2])
    encoded = trainer.encoder.encode(examples(images)[0])
    labelled = encoded["input_ids"][encoded["labels"] != IGNORE]
    text = trainer.loaded.processor.tokenizer.decode(labelled)
    assert ANSWERS[0] in text and ANSWERS[1] in text and "Is the image" not in text
    result = trainer.run()
    assert result.train_loss is not None and result.train_loss == result.train_loss  # not NaN


def test_resume_refuses_a_checkpoint_that_does_not_match(images: list[str], tmp_path: Path) -> None:
    """Resume loads the trained weights strictly: a checkpoint written with other LoRA targets is
    an error naming the keys, never a silent partial load."""
    from finetune.train import TrainError

    model = synthetic.build_saved("llava", tmp_path / "model")
    data = examples(images)
    Trainer(config(model, tmp_path / "a", "train.max_steps=1"), train_examples=data).run()
    checkpoint = tmp_path / "a" / "checkpoint-1"
    other = config(
        model,
        tmp_path / "b",
        "train.max_steps=2",
        "lora.target_modules=[q_proj]",
        f"train.resume_from={checkpoint}",
    )
    with pytest.raises(
        TrainError, match=r"does not match the model.*missing \[\], unexpected \['[^']*_proj.lora_A"
    ):
        Trainer(other, train_examples=data).run()
