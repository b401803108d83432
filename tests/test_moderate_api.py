"""``icm moderate --model SPEC``: a hosted/served MLLM as a zero-shot moderator, against the fake
OpenAI server: verdict from its yes/no answer, explanation from a second question, statuses of
their own for answers that do not parse."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fakes import FakeOpenAIServer
from fakes.base import Action, reply
from fakes.openai_server import request_schema
from PIL import Image
from typer.testing import CliRunner

from data.store import Store
from finetune.moderate_api import is_model_spec
from graphs.cli import app


def _images(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    paths = {}
    for n, name in enumerate(("bust", "normal", "garbled")):
        path = folder / f"{name}.png"
        Image.new("RGB", (30 + 10 * n, 30), (40 * n, 90, 160)).save(path)
        paths[name] = path
    return paths


def test_a_served_model_moderates_zero_shot(tmp_path: Path, fake_keys: Any) -> None:
    images = _images(tmp_path / "in")
    encoded = {name: base64.b64encode(p.read_bytes()).decode() for name, p in images.items()}
    seen: list[tuple[str, str]] = []

    def responder(body: dict[str, Any]) -> Action:
        text = json.dumps(body["messages"])
        name = next(n for n, data in encoded.items() if data in text)
        first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        seen.extend((name, part["text"]) for part in first_user if part["type"] == "text")
        if "answer" in request_schema(body)["properties"]:
            if name == "garbled":
                return reply("I would rather not say.")
            return reply({"answer": "Yes" if name == "bust" else "No"})
        return reply({"explanation": f"The {name} image, judged under the rule."})

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"image": str(p), "policy": "icm_sexy", "category": c}) + "\n"
            for p, c in zip(images.values(), ("upper_bust", "upper_normal", "upper_normal"),
                            strict=True)
        )
    )  # fmt: skip
    db = tmp_path / "icm.duckdb"
    with FakeOpenAIServer(responder=responder) as server:
        spec = f"openai:gpt-4o-mini?base_url={server.base_url}"
        assert is_model_spec(spec) and not is_model_spec("icm-tiny")
        result = CliRunner().invoke(
            app,
            ["moderate", *map(str, images.values()), "--model", spec, "--policy", "icm_sexy",
             "--rule", "R1", "--manifest", str(manifest), "--db", str(db), "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    assert (out["predictions"], out["with_expected"], out["accuracy"]) == (3, 2, 1.0)
    # The bare question for the verdict, the rule's instruction for the explanation.
    asked = {q for _, q in seen}
    assert "Is the image sexy? Answer with Yes or No." in asked
    assert any(
        q.startswith("Under rule R1 (audience: under 13, conservative culture)") for q in asked
    )
    with Store.open(db, read_only=True) as store:
        rows = {Path(r["image_path"]).stem: r for r in store.rows("SELECT * FROM predictions")}
        run = store.rows("SELECT kind, config_json FROM runs")[0]
    assert run["kind"] == "moderate" and json.loads(run["config_json"])["model"] == spec
    assert (rows["bust"]["verdict"], rows["bust"]["expected_verdict"]) == ("sexy", "sexy")
    assert rows["bust"]["explanation"] == "The bust image, judged under the rule."
    assert (rows["normal"]["verdict"], rows["normal"]["status"]) == ("not sexy", "ok")
    assert all(r["score"] is None for r in rows.values())  # no log-probabilities: no score
    # An answer that never parses is its own status, with no verdict: not a "No".
    garbled = rows["garbled"]
    assert (garbled["status"], garbled["verdict"]) == ("parse_failed", None), garbled["explanation"]
