"""Issue 28: cache keys hash the same canonical JSON whoever writes it; orjson (fast) writes it
only where it is known to write exactly what ``json.dumps`` writes, so no existing key changes
(``agents.models.cache.canonical_json_bytes``)."""

from __future__ import annotations

import json
import random

from agents.models.base import GenerationParams, Message
from agents.models.cache import _orjson_writes_the_same, cache_key, canonical_json_bytes
from agents.models.images import ImageInput


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _random_text(rng: random.Random) -> str:
    ranges = [(0, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFF), (0x10000, 0x10FFFF)]
    special = ["\\", '"', "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", "\u2028", "/"]
    out = []
    for _ in range(rng.randint(0, 40)):
        if rng.random() < 0.3:
            out.append(rng.choice(special))
        else:
            low, high = rng.choice(ranges)
            out.append(chr(rng.randint(low, high)))
    return "".join(out)


def test_random_payloads_are_written_byte_for_byte_as_json_writes_them() -> None:
    rng = random.Random(28)
    floats = [0.0, -0.0, 0.7, 1.0, 0.1 + 0.2, 123456.789, 1e-05, 1e16, 2.5e-3, float("inf")]
    for _ in range(2000):
        payload = {
            "provider": _random_text(rng),
            "params": {
                "temperature": rng.choice(floats),
                "max_tokens": rng.choice([None, 1, 1024, 2**63 + 5, -3]),
                "top_p": rng.choice([None, 0.95, 1e-07]),
                "seed": rng.choice([None, True, 7]),
            },
            "messages": [
                {"role": "user", "text": _random_text(rng), "images": [{"w": 3, "z": "é"}]}
                for _ in range(rng.randint(0, 3))
            ],
            "b_key": [1, "x", None, False],
            "a_key": (2, "y"),
        }
        assert canonical_json_bytes(payload) == _json(payload), payload


def test_values_orjson_would_write_differently_go_to_json() -> None:
    assert not _orjson_writes_the_same({"t": 1e-05})  # json: 1e-05, orjson: 1e-5
    assert not _orjson_writes_the_same({"t": float("nan")})
    assert not _orjson_writes_the_same({1: "int key"})
    assert not _orjson_writes_the_same({"clé": 1})  # a non-ASCII key: sort orders may differ
    assert not _orjson_writes_the_same({"x": object()})
    assert _orjson_writes_the_same({"t": 0.7, "n": None, "l": [1, "a", True]})
    assert canonical_json_bytes({"t": 1e-05, "clé": 2}) == _json({"t": 1e-05, "clé": 2})


def test_a_cache_key_is_the_sha256_of_the_json_text() -> None:
    """The key of a request written before this change is the key written now."""
    import hashlib

    from pydantic import BaseModel

    from agents.models.cache import messages_for_record, schema_document

    class Answer(BaseModel):
        text: str

    image = ImageInput(sha256="ab" * 32, media_type="image/png", data=b"x", width=3, height=4)
    messages = [Message("system", "Système: be careful.\n"), Message("user", "Décris", (image,))]
    params = GenerationParams(temperature=0.7, max_tokens=512)
    payload = {
        "provider": "openai",
        "model": "gpt-x",
        "endpoint": None,
        "dialect": "json_schema",
        "params": params.as_dict(),
        "messages": messages_for_record(messages),
        "prompt_hash": "h",
        "attempt": 2,
    }
    expected = hashlib.sha256(_json(payload))
    expected.update(b"\x00schema\x00")
    expected.update(schema_document(Answer)[1].encode())
    key = cache_key(
        provider="openai", model="gpt-x", endpoint=None, dialect="json_schema", params=params,
        messages=messages, schema=Answer, prompt_hash="h", attempt=2,
    )  # fmt: skip
    assert key == expected.hexdigest()
