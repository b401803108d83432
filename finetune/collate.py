"""Conversations -> model inputs: the family's chat template, labels on assistant tokens only.

How labels are found, for any family, without guessing token patterns:

1. The conversation is rendered with the processor's chat template turn by turn: the prompt up
   to each assistant turn (with the generation prompt) and the conversation including it. The
   difference is the assistant's answer plus whatever closes the turn; it becomes a character
   span. An answer whose template closes it with no end token (LLaVA-1.5's) gets the tokenizer's
   EOS appended, so the model learns to stop.
2. The processor tokenises the full text with images, expanding each image placeholder into the
   model's image tokens, and reports character offsets and where it expanded placeholders.
3. A token is labelled when it overlaps an answer span (shifted past the expansions). So the
   labels are exactly the answer text and its end-of-turn token; the prompt, the system text,
   the image tokens and the padding carry ``-100``.

Image tokens are never truncated: a too-long example is cut at its end (losing answer tokens,
never image tokens), and one whose image tokens alone pass ``max_length`` is an error that names
the record. Batches are padded on the right for training (``padding_side="left"`` for
generation); pixel tensors are concatenated on their batch axis and zero-padded where images of
one batch differ in tile count (Idefics3, LLaVA-NeXT), which those models treat as padding.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from data.images import load_image
from finetune.families import Family, image_token_id

IGNORE = -100
TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")
"""Per-token tensors: padded along the sequence. Every other tensor is a pixel-side input."""


class TemplateError(ValueError):
    """The chat template does not render a conversation as a growing prefix, turn by turn."""


class TooLongError(ValueError):
    """An example's image tokens do not fit ``max_length``."""


@dataclass(frozen=True)
class Example:
    """One training conversation: an optional image and alternating turns.

    ``turns`` are (role, text) with roles ``system`` (first only), ``user`` and ``assistant``;
    the image goes atop the first user turn.
    """

    id: str
    image: str | None
    turns: tuple[tuple[str, str], ...]
    source: str = "icm"
    group: str = ""
    """Split key: examples with the same group (the same image) land in the same split."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def messages(self) -> list[dict[str, Any]]:
        """The HF multimodal chat format every processor's template reads."""
        out: list[dict[str, Any]] = []
        image_placed = self.image is None
        for role, text in self.turns:
            content: list[dict[str, Any]] = []
            if role == "user" and not image_placed:
                content.append({"type": "image"})
                image_placed = True
            content.append({"type": "text", "text": text})
            out.append({"role": role, "content": content})
        return out


def render_with_spans(
    processor: Any, messages: list[dict[str, Any]], end_of_turn: str
) -> tuple[str, list[tuple[int, int]]]:
    """The conversation's text and the character span of every assistant answer in it."""

    def render(upto: int, generation_prompt: bool) -> str:
        return processor.apply_chat_template(
            messages[:upto], add_generation_prompt=generation_prompt, tokenize=False
        )

    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    emitted = 0  # characters of the text being built
    done = ""  # the template's own rendering of the turns already taken
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(k, True)
        full = render(k + 1, False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise TemplateError(
                "the chat template does not render the conversation as a growing prefix "
                f"(turn {k}); this trainer needs one that does"
            )
        head = prompt[len(done) :]
        parts.append(head)
        emitted += len(head)
        body = full[len(prompt) :]
        cut = body.rfind(end_of_turn)
        if cut >= 0:
            answer, rest = body[: cut + len(end_of_turn)], body[cut + len(end_of_turn) :]
        else:
            stripped = body.rstrip()
            answer, rest = stripped + end_of_turn, body[len(stripped) :]
        spans.append((emitted, emitted + len(answer)))
        parts += [answer, rest]
        emitted += len(answer) + len(rest)
        done = full
    whole = render(len(messages), False)
    if not whole.startswith(done):
        raise TemplateError(
            "the chat template does not render the conversation as a growing prefix"
        )
    parts.append(whole[len(done) :])
    return "".join(parts), spans


def label_mask(
    offsets: Sequence[Sequence[int]],
    spans: list[tuple[int, int]],
    replacements: list[dict[str, Any]] | None,
) -> list[bool]:
    """Tokens overlapping an answer span, with spans shifted past expanded placeholders."""
    replacements = sorted(replacements or [], key=lambda r: r["span"][0])
    ends = [r["span"][1] for r in replacements]
    # new_span is in the expanded text: its end minus the placeholder's end is the total gain
    gained = [0] + [r["new_span"][1] - r["span"][1] for r in replacements]
    shifted = [
        (
            start + gained[bisect.bisect_right(ends, start)],
            end + gained[bisect.bisect_right(ends, end)],
        )
        for start, end in spans
    ]
    mask = []
    for token_start, token_end in offsets:
        mask.append(
            token_end > token_start
            and any(token_start < end and token_end > start for start, end in shifted)
        )
    return mask


class ChatEncoder:
    """Encodes one :class:`Example` into unpadded model inputs with labels."""

    def __init__(self, processor: Any, family: Family, model_config: Any, max_length: int) -> None:
        self.processor = processor
        self.family = family
        self.tokenizer = processor.tokenizer
        self.end_of_turn = family.end_of_turn_token(self.tokenizer)
        self.image_token_id = image_token_id(model_config)
        self.max_length = max_length
        self._render = lru_cache(maxsize=65536)(self._render_uncached)

    def _render_uncached(self, example: Example) -> tuple[str, tuple[tuple[int, int], ...]]:
        text, spans = render_with_spans(self.processor, example.messages(), self.end_of_turn)
        return text, tuple(spans)

    def render(self, example: Example) -> tuple[str, list[tuple[int, int]]]:
        text, spans = self._render(example)
        return text, list(spans)

    def encode(self, example: Example) -> dict[str, Any]:
        text, spans = self.render(example)
        images = None
        if example.image is not None:
            images = [[load_image(example.image).image]]
        bos = self.tokenizer.bos_token
        processed = self.processor(
            text=[text],
            images=images,
            return_offsets_mapping=True,
            return_text_replacement_offsets=True,
            add_special_tokens=not (bos and text.startswith(bos)),
            return_tensors="pt",
        )
        offsets = processed.pop("offset_mapping")[0].tolist()
        replacements = processed.pop("text_replacement_offsets", None)
        replacements = replacements[0] if replacements else []
        ids = processed["input_ids"][0]
        mask = label_mask(offsets, spans, replacements)
        labels = torch.where(
            torch.tensor(mask, dtype=torch.bool), ids, torch.full_like(ids, IGNORE)
        )
        out: dict[str, Any] = {"input_ids": ids, "labels": labels}
        for key, value in processed.items():
            if key == "input_ids":
                continue
            out[key] = value[0] if key in TOKEN_KEYS else value
        is_image = ids == self.image_token_id
        out["n_image_tokens"] = int(is_image.sum())
        if len(ids) > self.max_length:
            last_image = int(is_image.nonzero().max()) if out["n_image_tokens"] else -1
            if last_image >= self.max_length:
                raise TooLongError(
                    f"record {example.id}: its image tokens end at position {last_image + 1}, "
                    f"past max_length {self.max_length}; raise data.max_length (never cut "
                    "image tokens: the model would fail with 'image features and image tokens "
                    "do not match')"
                )
            for key in TOKEN_KEYS:
                if key in out:
                    out[key] = out[key][: self.max_length]
            out["truncated"] = True
        return out


class Collator:
    """Pads encoded examples into a batch (right padding unless told otherwise)."""

    def __init__(self, encoder: ChatEncoder, padding_side: str = "right") -> None:
        self.encoder = encoder
        self.padding_side = padding_side
        tokenizer = encoder.tokenizer
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else tokenizer.eos_token_id

    def __call__(self, examples: Sequence[Example | dict[str, Any]]) -> dict[str, Any]:
        encoded = [e if isinstance(e, dict) else self.encoder.encode(e) for e in examples]
        return pad_batch(encoded, self.pad_id, self.padding_side)


def pad_batch(encoded: list[dict[str, Any]], pad_id: int, padding_side: str = "right") -> dict:
    """Pad per-token tensors; concatenate (zero-padding odd shapes) the pixel-side tensors."""
    length = max(len(e["input_ids"]) for e in encoded)
    batch: dict[str, Any] = {}
    fill = {"input_ids": pad_id, "labels": IGNORE}
    for key in TOKEN_KEYS:
        if key == "attention_mask" and key not in encoded[0]:
            continue
        if key not in encoded[0]:
            continue
        rows = []
        for e in encoded:
            row = e[key]
            pad = torch.full((length - len(row),), fill.get(key, 0), dtype=row.dtype)
            rows.append(torch.cat([row, pad] if padding_side == "right" else [pad, row]))
        batch[key] = torch.stack(rows)
    if "attention_mask" not in batch:
        batch["attention_mask"] = (batch["input_ids"] != pad_id).long()
    pixel_keys = list(
        dict.fromkeys(
            k for e in encoded for k, v in e.items() if k not in TOKEN_KEYS and torch.is_tensor(v)
        )
    )
    for key in pixel_keys:
        tensors = [e[key] for e in encoded if key in e]
        batch[key] = _cat_padded(tensors)
    batch["n_image_tokens"] = sum(e["n_image_tokens"] for e in encoded)
    return batch


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    if all(t.shape[1:] == tensors[0].shape[1:] for t in tensors):
        return torch.cat(tensors, 0)
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        out = torch.zeros((t.shape[0], *shape), dtype=t.dtype)
        out[(slice(None), *(slice(0, s) for s in t.shape[1:]))] = t
        padded.append(out)
    return torch.cat(padded, 0)


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch minus the bookkeeping keys the model does not take."""
    return {k: v for k, v in batch.items() if k not in ("labels", "n_image_tokens")}
