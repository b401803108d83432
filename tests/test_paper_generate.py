"""``--preset paper``: the released pipeline of zhaoyuzhi/ICM-Assistant, end to end against the
fake OpenAI server (the real command in a subprocess), and its seed-leak filter on its own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from test_generate import make_manifest

from agents.paper_answers import merged_answers
from data.export_paper import export_paper_run
from data.release_seeds import release_seeds
from data.store import Store
from evaluators.seed_leak import filter_seed_leaks, leaks, release_filter
from graphs.config import load_config

REPO = Path(__file__).resolve().parents[1]
RELEASE = Path(__file__).parent / "fixtures" / "paper_release"
CATEGORIES = ["upper_normal", "middle_leg", "upper_bust"]


# ----------------------------------------------------------------------------- the filter
@pytest.mark.parametrize(
    "sentence",
    [
        "Based on the prior information, the image is sexy.",
        "The Prior Description says she shows her cleavage.",
        "Based on the information provided, the pose is suggestive.",
        "As stated in the prior knowledge, the legs are bare.",
        "It is known that the person is biting her lip.",  # echoes our seed wording
        "What is known about the image points to a close-up.",
    ],
)
def test_a_sentence_that_mentions_the_seed_leaks(sentence: str) -> None:
    assert leaks(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "The woman wears a red dress and stands by a window.",
        "Her posture is relaxed, and the lighting is warm.",
        "The image is not sexy because nothing intimate is shown.",
        "Priorities in the scene are the bright colours.",  # "prior" inside another word
        "The information on the sign is unreadable.",
    ],
)
def test_a_sentence_about_the_image_does_not_leak(sentence: str) -> None:
    assert not leaks(sentence)


TEXT = (
    "The woman wears a short skirt. Based on the prior information, her thighs are bare. "
    "The pose is casual. The image is sexy."
)


def test_rest_mode_drops_from_the_first_leak_on_like_the_release() -> None:
    out = filter_seed_leaks(TEXT, "rest")
    assert out.text == "The woman wears a short skirt."
    assert out.dropped == (
        "Based on the prior information, her thighs are bare.",
        "The pose is casual.",
        "The image is sexy.",
    )


def test_sentence_mode_drops_only_the_leaking_sentence_and_off_keeps_all() -> None:
    out = filter_seed_leaks(TEXT, "sentence")
    assert out.text == "The woman wears a short skirt. The pose is casual. The image is sexy."
    assert out.dropped == ("Based on the prior information, her thighs are bare.",)
    assert filter_seed_leaks(TEXT, "off").text == TEXT
    clean = "A calm beach scene. Nobody is exposed."
    assert filter_seed_leaks(clean, "rest").text == clean


# ----------------------------------------------------------------------------- the preset
def test_release_mode_is_the_releases_filter_over_the_merged_text() -> None:
    """Split on every "." (inside "e.g." too), cut from the first piece with a black word,
    join the rest with "." again; only the release's black words count. Over the merged
    answers, a leak in answer 1 drops answers 2 and 3."""
    text = (
        "She wears a dress, e.g. a red one. Based on the prior information, her legs are "
        "bare. The pose is casual."
    )
    out = filter_seed_leaks(text, "release")
    assert out.text == "She wears a dress, e.g. a red one"
    assert out.dropped == (
        "Based on the prior information, her legs are bare",
        "The pose is casual",
    )
    assert release_filter("It is known that she sits. The room is dim.").dropped == ()
    merged = merged_answers(
        "A woman sits.  As the prior description says, she is bare-legged.",
        "The mood is calm.",
        "The image is sexy because of the bare legs.",
    )
    assert merged.startswith("A woman sits. As the prior")  # joined, double spaces made one
    assert filter_seed_leaks(merged, "release").text == "A woman sits"


def test_the_preset_sets_each_point_and_every_point_stays_overridable() -> None:
    cfg = load_config(None, {}, preset="paper")
    assert cfg.pipeline == "paper" and cfg.preset == "paper"
    assert cfg.qa.model_dump() == {"yes_no": 6, "multiple_choice": 5, "what": 2, "how": 2}
    assert cfg.paper.seed_leak_filter == "release" and cfg.paper.qa_from == "explanation"
    assert cfg.paper.explanation == "merged" and cfg.paper.moderation_focus == "mixed"
    assert cfg.paper.image_call == "release" and cfg.paper.seeds == "release"
    assert cfg.paper.qa_passes == "separate"
    ours = load_config(None, {}).paper  # our defaults: every point the other way
    assert (ours.explanation, ours.moderation_focus, ours.image_call, ours.seeds) == (
        "answer", "always", "ours", "policy"
    )  # fmt: skip
    assert load_config(None, {"paper": {"moderation_focus": False}}).paper.moderation_focus == (
        "never"
    )  # the switch's earlier yes/no form still reads
    assert not cfg.checks and not cfg.llm_critic and not cfg.verdict_questions
    assert cfg.role_settings["paper_answers"]["temperature"] == 0.01
    mine = load_config(
        None,
        {"paper": {"seed_leak_filter": "sentence"}, "qa": {"multiple_choice": 0}, "checks": True},
        preset="paper",
    )
    assert mine.paper.seed_leak_filter == "sentence" and mine.paper.qa_from == "explanation"
    assert mine.qa.yes_no == 6 and mine.qa.multiple_choice == 0 and mine.checks
    assert load_config(None, {}).identity() == load_config(None, {"pipeline": "ours"}).identity()
    assert cfg.run_id() != load_config(None, {}).run_id()


def _text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return str(content)


def _has_image(message: dict[str, Any]) -> bool:
    content = message["content"]
    return isinstance(content, list) and any(p.get("type") == "image_url" for p in content)


def _schema(body: dict[str, Any]) -> dict[str, Any]:
    return body["response_format"]["json_schema"]["schema"]


def _counts(schema: dict[str, Any]) -> dict[str, int]:
    props = schema["properties"]
    assert all(props[k]["minItems"] == props[k]["maxItems"] for k in props)
    return {k: props[k]["maxItems"] for k in ("yes_no", "multiple_choice", "what", "how")}


def test_generate_preset_paper_makes_the_releases_calls(tmp_path: Path) -> None:
    """One three-question image-seeing call per image, seeded with the release script's
    sentence (read from ``--release``) and not told the verdict, the image first and no system
    message; the three answers merged and seed-leak filtered as the release does, stored and
    exported as the explanation; then a 6/2/2 pass and a separate 5-MC pass over that merged
    text, without the mixed prompt's moderation sentence; the run exports in the paper's
    style."""
    manifest = make_manifest(tmp_path / "in", CATEGORIES)
    db = tmp_path / "icm.duckdb"
    seeds = release_seeds(RELEASE).sentences
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        command = [
            sys.executable, str(REPO / "graphs" / "generate.py"), str(manifest),
            "--preset", "paper", "--db", str(db), "--no-perception", "--run", "paper",
            "--release", str(RELEASE),
            "--role", f"all=openai-compatible:{server.base_url}#fake-model",
            "--role-setting", "all.jitter=false", "--role-setting", "all.backoff_base_s=0",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stderr.count("accepted unchecked (checks are off)") == 3
        # the end-of-run report shows the paper's records and its export command
        report = " ".join(done.stderr.split())  # the console wraps lines at its width
        assert "as `icm export --preset paper` writes it" in report
        assert "_description1" in report and "_pair0" in report
        assert "icm export paper --preset paper --db" in report
        assert "--format llava --db" not in report
        bodies = [r.body for r in server.chat_requests() if r.body]
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in bodies:
        props = _schema(body)["properties"]
        kind = "answers" if "explicit_description" in props else "qa"
        if kind == "qa":
            kind = "mc" if _counts(_schema(body))["multiple_choice"] else "qa"
        by_kind[kind].append(body)
    assert {k: len(v) for k, v in by_kind.items()} == {"answers": 3, "qa": 3, "mc": 3}
    assert len(bodies) == 9  # nothing else: no describer, explainer, critic or retries

    seeded = []
    for body in by_kind["answers"]:
        assert [m["role"] for m in body["messages"]] == ["user"]  # no system message
        user = body["messages"][0]
        text = _text(user)
        assert _has_image(user) and user["content"][0]["type"] == "image_url"  # image first
        assert body["temperature"] == pytest.approx(0.01)
        questions = [text.index(f"\n{n}. ") for n in (1, 2, 3)]
        assert questions == sorted(questions)  # the three questions, in turn
        assert "explicit content" in text and "implicit content" in text
        assert "why this image is or is not sexy" in text
        seed = next(c for c in CATEGORIES if seeds[c] in text)  # the release's sentence
        seeded.append(seed)
        assert "verdict" not in text.lower() and '"sexy"' not in text  # the verdict unnamed
        assert "Rule R" not in text and "audience" not in text.lower()
    assert sorted(seeded) == sorted(CATEGORIES)  # middle_leg too (the release's KeyError)

    with Store.open(db, read_only=True) as store:
        explanations = store.rows("SELECT sample_id, explanation FROM explanations")
        qa_types = store.rows("SELECT sample_id, qa_type FROM qa_items")
        statuses = store.rows("SELECT status FROM samples")
        stages = store.rows("SELECT stage FROM stage_outputs")
        run_id = store.scalar("SELECT run_id FROM runs")
        export = export_paper_run(store, run_id, tmp_path / "paper.json")
    assert [s["status"] for s in statuses] == ["accepted"] * 3
    assert Counter(s["stage"] for s in stages) == {
        "paper_answers": 3, "paper_qa": 3, "paper_mc": 3
    }  # fmt: skip
    texts = {e["explanation"] for e in explanations}
    assert len(explanations) == 3  # the base rule only
    for text in texts:  # the three answers merged; the responder leaks the seed last, and the
        # release's filter cuts there, splitting on "." (so no full stop is left at the end)
        assert text.startswith("A person stands in daylight wearing casual clothes")
        assert "The atmosphere is calm and ordinary. The pose and clothing decide" in text
        assert "prior information" not in text.lower() and text.endswith("adds to it")

    passes = {
        "qa": {"yes_no": 6, "multiple_choice": 0, "what": 2, "how": 2},
        "mc": {"yes_no": 0, "multiple_choice": 5, "what": 0, "how": 0},
    }
    for kind, expected in passes.items():
        for body in by_kind[kind]:
            assert _counts(_schema(body)) == expected
            text = _text(body["messages"][-1])
            assert "content moderation." not in text  # the release's mixed prompt only
            assert body["temperature"] == pytest.approx(0.6) and body["top_p"] == 0.9
            source = text.split("Text: ", 1)[1].split("\n")[0]
            assert source in texts  # the merged, filtered explanation
    per_sample = Counter((r["sample_id"], r["qa_type"]) for r in qa_types)
    for sample_id in {e["sample_id"] for e in explanations}:
        got = {t: per_sample[(sample_id, t)] for t in ("yes_no", "multiple_choice", "what", "how")}
        assert got == {"yes_no": 6, "multiple_choice": 5, "what": 2, "how": 2}
    records = json.loads((tmp_path / "paper.json").read_text())
    assert export.records == len(records) == 3 * (5 + 6 + 5 + 2 + 2)
    answers = [r["conversations"][1]["value"] for r in records]
    for text in texts:  # the merged explanation is what the paper-style export trains on
        assert answers.count(text) == 5


def test_the_paper_pipeline_under_our_checks_maps_them_onto_its_stages(tmp_path: Path) -> None:
    """``checks: true`` with the paper pipeline: the checks name our stages, the registry's
    aliases send a failure to the paper stage doing that job (no unknown-stage error)."""
    import asyncio

    from graphs.runner import GenerationRun

    manifest = make_manifest(tmp_path / "in", CATEGORIES[:2])
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        options = {
            "manifest": manifest,
            "db": tmp_path / "icm.duckdb",
            "roles": {"all": f"openai-compatible:{server.base_url}#fake-model"},
            "role_settings": {"all": {"jitter": "false", "backoff_base_s": "0"}},
            "perception": False,
            "checks": True,
            "max_stage_retries": 1,
        }
        summary = asyncio.run(GenerationRun(load_config(None, options, preset="paper")).run())
    assert summary.counts["failed"] == 0
    assert summary.counts["accepted"] + summary.counts["rejected"] == 2
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        checked = store.rows("SELECT DISTINCT stage FROM critiques")
        redone = store.rows("SELECT stage FROM stage_outputs WHERE attempt > 1")
    assert checked  # the deterministic checks ran and were recorded
    assert {r["stage"] for r in redone} <= {"paper_answers", "paper_qa", "paper_mc"}


def test_images_first_reaches_every_openai_client_and_the_cache_key() -> None:
    """A message marked ``images_first`` sends its image before its text through the SDK/raw
    body and through LangChain alike; its cache record says so (an unmarked one is unchanged)."""
    from agents.models.base import ImageInput, Message
    from agents.models.cache import messages_for_record
    from agents.models.providers.openai_chat import image_block, to_langchain
    from agents.models.providers.openai_wire import wire_messages

    image = ImageInput(sha256="ab" * 32, media_type="image/png", data=b"png", width=1, height=1)
    first = Message("user", "Describe it.", (image,), images_first=True)
    after = Message("user", "Describe it.", (image,))
    for message, order in ((first, ["image_url", "text"]), (after, ["text", "image_url"])):
        wire = wire_messages([message], image_block)[0]["content"]
        assert [part["type"] for part in wire] == order
        chain = to_langchain([message])[0].content
        assert [part["type"] for part in chain] == order  # type: ignore[index, union-attr]
    assert messages_for_record([first])[0]["images_first"] is True
    assert "images_first" not in messages_for_record([after])[0]


def test_a_mixed_qa_pass_asks_every_kind_at_once_with_the_moderation_sentence(
    tmp_path: Path,
) -> None:
    """``paper.qa_passes: mixed`` (the release's ``--q_type mix``): one Q-A pass asks yes/no,
    multiple choice, what and how together, and only that pass carries "All questions are
    related to content moderation" under the preset's ``moderation_focus: mixed``; no separate
    multiple-choice pass runs."""
    import asyncio

    from graphs.runner import GenerationRun

    manifest = make_manifest(tmp_path / "in", CATEGORIES[:1])
    with FakeOpenAIServer(responder=ICMResponder()) as server:
        options = {
            "manifest": manifest,
            "db": tmp_path / "icm.duckdb",
            "roles": {"all": f"openai-compatible:{server.base_url}#fake-model"},
            "role_settings": {"all": {"jitter": "false", "backoff_base_s": "0"}},
            "perception": False,
            "qa": {"yes_no": 3, "multiple_choice": 3, "what": 2, "how": 2},
            "paper": {"qa_passes": "mixed"},
        }
        summary = asyncio.run(GenerationRun(load_config(None, options, preset="paper")).run())
        bodies = [r.body for r in server.chat_requests() if r.body]
    assert summary.counts["accepted"] == 1
    qa_bodies = [b for b in bodies if "yes_no" in _schema(b)["properties"]]
    assert len(qa_bodies) == 1  # one mixed pass, no separate MC pass
    [body] = qa_bodies
    assert _counts(_schema(body)) == {"yes_no": 3, "multiple_choice": 3, "what": 2, "how": 2}
    text = _text(body["messages"][-1])
    assert "All questions are related to content moderation." in text
    assert "3 multiple-choice questions" in text
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        stages = {r["stage"] for r in store.rows("SELECT stage FROM stage_outputs")}
        kinds = Counter(r["qa_type"] for r in store.rows("SELECT qa_type FROM qa_items"))
    assert stages == {"paper_answers", "paper_qa"}
    assert kinds == {"yes_no": 3, "multiple_choice": 3, "what": 2, "how": 2}
