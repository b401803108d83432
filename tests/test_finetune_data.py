"""Training data: files, the image-level split, mixed SFT, and the fine-tune config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from finetune.collate import Example
from finetune.config import CONFIG_FILE, ConfigError, FinetuneConfig
from finetune.data import (
    DataFileError,
    build_datasets,
    examples_from_file,
    mix_general,
    split_by_image,
)

SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "finetune" / "configs"


def _images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.new("RGB", (20 + i, 20), (i * 7 % 256, 10, 10)).save(folder / f"{i}.png")
        names.append(f"{i}.png")
    return names


def _llava(image: str | None, rid: str, answer: str = "No.") -> dict:
    first = "<image>\nIs the image sexy? Explain why." if image else "Say hello."
    record = {"id": rid, "conversations": [{"from": "human", "value": first},
                                           {"from": "gpt", "value": answer}]}  # fmt: skip
    if image:
        record["image"] = image
    return record


def _examples(n_images: int, rules: int = 4) -> list[Example]:
    return [
        Example(f"img{i}-R{r}", f"/x/{i}.png", (("user", "q"), ("assistant", "a")), group=f"sha{i}")
        for i in range(n_images)
        for r in range(1, rules + 1)
    ]


# --------------------------------------------------------------------------- split
def test_split_keeps_every_image_on_one_side() -> None:
    data = _examples(40)
    train, val, test = split_by_image(data, 0.25, seed=0)
    train_groups, val_groups = {e.group for e in train}, {e.group for e in val}
    assert not train_groups & val_groups and not test
    assert len(train) + len(val) == len(data)
    assert 4 <= len(val_groups) <= 18  # about a quarter of 40 images
    for group in val_groups:  # all rule variants of a validation image are in validation
        assert sum(e.group == group for e in val) == 4
    again = split_by_image(data, 0.25, seed=0)
    assert [e.id for e in again[1]] == [e.id for e in val]
    other = split_by_image(data, 0.25, seed=1)
    assert {e.group for e in other[1]} != val_groups


def test_split_is_stable_when_images_are_added() -> None:
    _, val, _ = split_by_image(_examples(30), 0.2, seed=3)
    _, val_more, _ = split_by_image(_examples(60), 0.2, seed=3)
    before = {e.group for e in val}
    assert before <= {e.group for e in val_more}


def test_split_honours_explicit_splits_and_small_sets() -> None:
    data = _examples(3, rules=2)
    marked = [
        Example(e.id, e.image, e.turns, group=e.group, meta={"split": "test"})
        if e.group == "sha0"
        else e
        for e in data
    ]
    train, val, test = split_by_image(marked, 0.01, seed=0)
    assert {e.group for e in test} == {"sha0"}
    assert len({e.group for e in val}) == 1  # at least one validation image, even at 1 %
    assert not {e.group for e in train} & {e.group for e in val}


# --------------------------------------------------------------------------- mixed SFT
def test_mixed_sft_adds_general_examples_at_the_ratio(tmp_path: Path) -> None:
    icm = _examples(10, rules=2)
    general = [Example(f"g{i}", None, (("user", "hi"), ("assistant", "hello")), source="general",
                       group=f"g{i}") for i in range(3)]  # fmt: skip
    mixed = mix_general(icm, general, 0.5, seed=0)
    assert len(mixed) == 30
    assert sum(e.source == "general" for e in mixed) == 10  # repeats a short file
    assert mix_general(icm, general, 0.0, seed=0) == icm

    names = _images(tmp_path / "img", 8)
    (tmp_path / "icm.llava.json").write_text(
        json.dumps([_llava(f"img/{n}", f"r{i}") for i, n in enumerate(names)])
    )
    (tmp_path / "general.llava.json").write_text(
        json.dumps([_llava(None, "g1"), _llava(f"img/{names[0]}", "g2")])
    )
    settings = [
        f"data.files=[{tmp_path / 'icm.llava.json'}]",
        f"data.general_file={tmp_path / 'general.llava.json'}",
        "data.general_ratio=0.5",
        "train.mode=mixed",
        "data.val_fraction=0.25",
    ]
    cfg = FinetuneConfig.load(None, settings)
    bundle = build_datasets(cfg.data, mode=cfg.train.mode)
    icm_train = [e for e in bundle.train if e.source != "general"]
    assert bundle.summary["general_added"] == round(0.5 * len(icm_train))
    assert bundle.summary["mode"] == "mixed" and bundle.summary["general_ratio"] == 0.5
    assert all(e.source != "general" for e in bundle.val)  # validation stays ICM only


# --------------------------------------------------------------------------- files
def test_llava_sharegpt_and_jsonl_files(tmp_path: Path) -> None:
    names = _images(tmp_path / "images", 2)
    llava = tmp_path / "set.llava.json"
    llava.write_text(json.dumps([_llava(f"images/{names[0]}", "a", "Yes."), _llava(None, "t")]))
    out = examples_from_file(llava)
    assert [e.id for e in out] == ["a", "t"]
    assert out[0].image == str(tmp_path / "images" / names[0])
    assert out[0].turns[0] == ("user", "Is the image sexy? Explain why.")  # <image> mark removed
    assert out[0].messages()[0]["content"][0] == {"type": "image"}
    assert out[1].image is None

    sharegpt = tmp_path / "set.sharegpt.jsonl"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>Is it sexy?"},
        {"role": "assistant", "content": "No."},
    ]
    rows = [{"messages": messages, "images": [names[1]]}]
    sharegpt.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (got,) = examples_from_file(sharegpt, image_root=tmp_path / "images")
    assert got.turns == (("system", "Be brief."), ("user", "Is it sexy?"), ("assistant", "No."))
    assert got.id == "set.sharegpt.jsonl:1"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            '[\n {"id": "ok", "conversations": [{"from": "human", "value": "hi"}, '
            '{"from": "gpt", "value": "yo"}]},\n {"id": "bad"}\n]',
            3,
            "neither LLaVA",
        ),
        ('[\n {"id": "x",\n  "conversations": [}\n]', 3, "invalid JSON"),
        (
            '[{"id": "g", "image": "missing.png", "conversations": [{"from": "human", "value": '
            '"<image>q"}, {"from": "gpt", "value": "a"}]}]',
            1,
            "image missing.png not found",
        ),
        (
            '{"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}\n',
            1,
            "alternate user/assistant",
        ),
        (
            '\n\n{"conversations": [{"from": "human", "value": "<image>q"}, '
            '{"from": "gpt", "value": "a"}]}\n',
            3,
            "1 <image> marks .* for 0 images",
        ),
        ('{"conversations": [{"from": "robot", "value": "q"}]}\n', 1, "unknown role 'robot'"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataFileError, match=rf"bad\.json:{line}: .*{message}"):
        examples_from_file(path)


# --------------------------------------------------------------------------- config
def test_config_yaml_overrides_and_saved_copy(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "model:\n  name_or_path: icm-tiny\n"
        "lora:\n  r: 8\n  target_modules: [q_proj, v_proj]\n"
        "data:\n  files: [a.json]\n"
        "train:\n  learning_rate: 1.0e-4\n  epochs: 2\n"
    )
    cfg = FinetuneConfig.load(path, ["train.learning_rate=3e-4", "lora.dropout=0"],
                              train={"max_steps": 7, "output_dir": None})  # fmt: skip
    assert cfg.lora.r == 8 and cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.train.learning_rate == 3e-4 and cfg.train.max_steps == 7 and cfg.train.epochs == 2.0
    saved = cfg.save(tmp_path / "out")
    assert saved.name == CONFIG_FILE
    assert FinetuneConfig.from_dict(json.loads(saved.read_text())) == cfg


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("train:\n  lr: 0.1\n", [], r"cfg\.yaml:2: train\.lr: unknown key \(did you mean"),
        ("trian:\n  epochs: 1\n", [], r"cfg\.yaml:1: trian: unknown section"),
        ("lora:\n  r: many\n", [], r"cfg\.yaml:2: lora\.r: expected an integer"),
        ("train:\n  mode: mixed\n", [], "mode mixed needs data.general_file"),
        ("train:\n  scheduler: wavy\n", [], "expected one of cosine, linear, constant"),
        ("", ["model.init_adapter=/x"], "set train.mode continuous"),
        ("", ["train.batch_size"], "expected section.key=value"),
    ],
)
def test_config_errors_say_where(
    tmp_path: Path, yaml_text: str, overrides: list, message: str
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml_text + "data:\n  files: [a.json]\n" if "data" not in yaml_text else yaml_text
    )
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig.load(path, overrides)


SHIPPED = ["icm_tiny.yaml", "icm_tiny_mixed.yaml", "icm_tiny_continuous.yaml", "qwen2_vl_2b.yaml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name: str) -> None:
    cfg = FinetuneConfig.load(SHIPPED_CONFIGS / name)
    assert cfg.data.runs == ["latest"]


def test_bundled_general_file_loads() -> None:
    general = examples_from_file(SHIPPED_CONFIGS / "general_samples.llava.json", source="general")
    assert len(general) >= 10 and all(e.image is None or Path(e.image).is_file() for e in general)
