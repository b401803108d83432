"""``icm moderate --model SPEC``: a hosted/served MLLM as a zero-shot moderator, against the fake
OpenAI server: verdict from its yes/no answer, explanation from a second question, statuses of
their own for answers that do not parse."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeAnthropicServer, FakeOpenAIServer
from fakes.base import Action, reply
from fakes.openai_server import request_schema
from PIL import Image
from typer.testing import CliRunner

from data.store import Store
from finetune.moderate_api import is_model_spec
from finetune.token_score import yes_no_score
from graphs.cli import app

#: ``{"answer": "Yes"}`` token by token; at the answer: Yes, No and two look-alikes
BUST_TOKENS = [
    ('{"', {'{"': 0.0}),
    ("answer", {"answer": 0.0}),
    ('":"', {'":"': 0.0}),
    ("Yes", {"Yes": -0.1, "No": -2.4, "Y": -0.05, " yes": -1.0}),
    ('"}', {'"}': 0.0}),
]


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

    bodies: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> Action:
        bodies.append(body)
        text = json.dumps(body["messages"])
        name = next(n for n, data in encoded.items() if data in text)
        first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        seen.extend((name, part["text"]) for part in first_user if part["type"] == "text")
        if "answer" in request_schema(body)["properties"]:
            if name == "garbled":
                return reply("I would rather not say.")
            if name == "bust":  # scripted log-probabilities at the answer token
                return reply({"answer": "Yes"}, logprobs=BUST_TOKENS)
            # the fake's default: each token certain, no alternative ("Yes" not among them)
            return reply({"answer": "No"})
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
    # the paper's score from the returned log-probabilities: softmax(lp_Yes, lp_No) only (the
    # sub-word "Y" and the spelling " yes" are other tokens and do not count)
    assert rows["bust"]["score"] == pytest.approx(1 / (1 + math.exp(-2.4 - -0.1)), abs=1e-9)
    assert rows["normal"]["score"] is None and rows["garbled"]["score"] is None
    items = {Path(i["image_path"]).stem: i for i in out["items"]}
    assert items["normal"]["score_note"] == "'Yes' is not among the top 1 log-probabilities"
    assert items["bust"]["score_note"] is None and out["scored"] == 1
    assert out["mean_score"] == pytest.approx(rows["bust"]["score"])  # absent is not 0
    assert json.loads(run["config_json"])["score_notes"] == {items["normal"]["score_note"]: 1}
    # the request asked for them in the Chat Completions wire format
    verdict_bodies = [b for b in bodies if "answer" in request_schema(b)["properties"]]
    assert all(b["logprobs"] is True and b["top_logprobs"] == 20 for b in verdict_bodies)
    # An answer that never parses is its own status, with no verdict: not a "No".
    garbled = rows["garbled"]
    assert (garbled["status"], garbled["verdict"]) == ("parse_failed", None), garbled["explanation"]


def test_the_score_is_the_softmax_over_exactly_the_yes_and_no_tokens() -> None:
    def position(chosen: str, alternatives: dict[str, float]) -> list[dict[str, Any]]:
        top = [{"token": t, "logprob": lp} for t, lp in alternatives.items()]
        answer = {"token": chosen, "logprob": alternatives[chosen], "top_logprobs": top}
        return [{"token": "{", "logprob": 0.0, "top_logprobs": []}, answer]

    scored = yes_no_score(position("No", {"No": -0.3, "Yes": -1.7, "NO": -0.2}))
    assert scored.score == pytest.approx(math.exp(-1.7) / (math.exp(-1.7) + math.exp(-0.3)))
    assert (scored.logprob_yes, scored.logprob_no, scored.note) == (-1.7, -0.3, None)
    # "YES" or "Y" never stand in for "Yes": without the exact token there is no score
    assert yes_no_score(position("No", {"No": -0.1, "YES": -2.0, "Y": -3.0})).score is None
    assert yes_no_score([{"token": "Maybe", "logprob": 0.0, "top_logprobs": []}]).note == (
        "no answer token is exactly 'Yes' or 'No'"
    )
    assert yes_no_score(None).note == "no token log-probabilities: the API returned none"
    # OpenAI reports an all but impossible token as -9999: a score near 0 or 1, not an overflow
    assert yes_no_score(position("No", {"No": -0.0, "Yes": -9999.0})).score == pytest.approx(0)
    assert yes_no_score(position("Yes", {"Yes": -0.0, "No": -9999.0})).score == pytest.approx(1)


def test_an_api_without_logprobs_gives_no_score_and_says_so(tmp_path: Path, fake_keys: Any) -> None:
    """Anthropic's API returns no token log-probabilities: the verdict stands, the score is
    absent with its reason, never a default."""
    images = _images(tmp_path / "in")

    def responder(body: dict[str, Any]) -> Action:
        schema = json.dumps(body.get("tools") or body)
        if '"answer"' in schema:
            return reply({"answer": "Yes"})
        return reply({"explanation": "Judged under the rule."})

    with FakeAnthropicServer(responder=responder) as server:
        spec = f"anthropic:claude-sonnet-4-5?base_url={server.base_url}"
        result = CliRunner().invoke(
            app,
            ["moderate", str(images["bust"]), "--model", spec, "--policy", "icm_sexy",
             "--no-store", "--json"],
        )  # fmt: skip
        sent = [r.body for r in server.requests if r.body]
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    [item] = out["items"]
    assert (item["verdict"], item["status"], item["score"]) == ("sexy", "ok", None)
    assert item["score_note"] == "no token log-probabilities: the API returned none"
    assert out["mean_score"] is None and out["scored"] == 0
    assert sent and not any("logprobs" in b or "top_logprobs" in b for b in sent)


def test_preset_paper_asks_the_bare_question_and_an_explicit_option_wins(
    tmp_path: Path, fake_keys: Any
) -> None:
    images = _images(tmp_path / "in")
    asked: list[str] = []

    def responder(body: dict[str, Any]) -> Action:
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        asked.extend(p["text"] for p in user if p["type"] == "text")
        return reply({"answer": "No"})

    with FakeOpenAIServer(responder=responder) as server:
        spec = f"openai:gpt-4o-mini?base_url={server.base_url}"
        common = ["moderate", str(images["normal"]), "--model", spec, "--policy", "icm_sexy",
                  "--no-store", "--no-explain", "--preset", "paper"]  # fmt: skip
        paper = CliRunner().invoke(app, common)
        ours = CliRunner().invoke(app, [*common, "--question", "rule"])
        wrong = CliRunner().invoke(app, [*common[:-1], "fancy"])
    assert paper.exit_code == 0 and ours.exit_code == 0, paper.output + ours.output
    assert asked[0] == "Is the image sexy? Answer with Yes or No."
    assert asked[1].startswith("Under rule R1 (audience: under 13, conservative culture)")
    assert wrong.exit_code != 0 and "unknown preset 'fancy'" in wrong.output


def test_a_rule_the_policy_lacks_is_named_before_anything_is_asked(
    tmp_path: Path, fake_keys: Any
) -> None:
    images = _images(tmp_path / "in")
    with FakeOpenAIServer() as server:
        spec = f"openai:gpt-4o-mini?base_url={server.base_url}"
        result = CliRunner().invoke(
            app,
            ["moderate", str(images["bust"]), "--model", spec, "--policy", "icm_sexy",
             "--rule", "R9", "--db", str(tmp_path / "icm.duckdb")],
        )  # fmt: skip
        assert not server.chat_requests()
    assert result.exit_code != 0
    assert "policy icm_sexy has no rule R9 (it has R1, R2, R3, R4)" in result.output
