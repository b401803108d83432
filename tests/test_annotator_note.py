"""A manifest row's ``note``: what a person who saw the image wrote it shows (issue 22, item 6).

The offline describer cannot see. Writing from detector evidence alone it called colour photos
"black and white" and denied the astronaut's detected face ("no visible people"); with the note
it has a source of sight that is a person's, not a detector's guess. The note must reach the
describer's prompt, be kept in the store (the grounding audit counts its words as seen), count
as supported text for the grounding check, and be validated like every other manifest field.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeOpenAIServer
from fakes.icm_responder import ICMResponder
from PIL import Image
from scripted_layer import ScriptedLayer

from agents.describer import describe, kept_key_elements
from agents.perception.grounding import find_ungrounded
from agents.perception.grounding_audit import supported_text
from data.manifest import MAX_NOTE_CHARS, ManifestError, read_manifest
from data.policy import load_policy
from data.sample_identity import distinct_rows
from data.store import Store
from graphs.config import load_config
from graphs.runner import GenerationRun

POLICIES = {"icm_sexy": load_policy("icm_sexy")}
NOTE = "Astronaut in an orange flight suit, upper body, holding a white helmet."
FIXTURES = Path(__file__).parent / "fixtures" / "grounding"
#: the bundled lottery ticket: a drawn card where both people detectors ran and found nothing
CARD = json.loads((FIXTURES / "lottery_ticket.evidence.json").read_text())


def _manifest(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (200, 90, 30)).save(folder / "a.png")
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_manifest_keeps_the_note_and_names_a_bad_one(tmp_path: Path) -> None:
    row = {"image": "a.png", "policy": "icm_sexy", "category": "upper_normal"}
    path = _manifest(tmp_path, [row | {"note": f"  {NOTE}\n "}])
    (read,) = read_manifest(path, POLICIES, default_policy=None)
    assert read.note == NOTE  # whitespace folded, the words kept
    bad = [row | {"note": 7}, row | {"note": "x" * (MAX_NOTE_CHARS + 1)}]
    with pytest.raises(ManifestError) as info:
        read_manifest(_manifest(tmp_path, bad), POLICIES, default_policy=None)
    assert f"{path}:1: field 'note'" in str(info.value)
    assert f"{path}:2: field 'note'" in str(info.value)


def test_two_rows_giving_one_image_different_notes_contradict(tmp_path: Path) -> None:
    row = {"image": "a.png", "policy": "icm_sexy", "category": "upper_normal"}
    path = _manifest(tmp_path, [row | {"note": NOTE}, row | {"note": "A cat on a sofa."}])
    rows = read_manifest(path, POLICIES, default_policy=None)
    (conflict,) = distinct_rows(path, rows).conflicts
    assert "lines 1 and 2" in conflict.message and "note (line 1:" in conflict.message


def test_the_describer_prompt_carries_the_note_only_when_given() -> None:
    policy = POLICIES["icm_sexy"]
    layer = ScriptedLayer(lambda ask: {"description": NOTE, "key_elements": ["flight suit"]})

    def user_prompt(note: str | None) -> str:
        asyncio.run(
            describe(layer, policy, category="upper_normal", evidence_text=None, images=(),
                     feedback=None, sample_id="s", attempt=1, note=note)
        )  # fmt: skip
        return layer.calls[-1].user

    with_note = user_prompt(NOTE)
    assert f"Note by a person who saw the image: {NOTE}" in with_note
    assert "from the note of a person who saw it" in with_note
    assert "Note by a person" not in user_prompt(None)


def test_words_of_the_note_are_seen_not_guessed() -> None:
    policy = POLICIES["icm_sexy"]
    text = "A man holds up a card that says SCRATCH & WIN."
    without = supported_text(policy, "upper_normal", ["R1"])
    assert find_ungrounded(text, CARD, without)  # a person on a card nobody saw one on
    note = "A drawn card a man holds up, with the words SCRATCH & WIN."
    assert find_ungrounded(text, CARD, supported_text(policy, "upper_normal", ["R1"], note)) == []


def test_an_audience_named_in_a_graphic_is_not_a_person_in_it() -> None:
    # "available for players to play" (the lottery ticket's explanation) names who the card is
    # for, not someone drawn on it; "a man" in the same card still is a claim
    assert find_ungrounded("The card is available for players to play.", CARD) == []
    assert find_ungrounded("It appeals to young players.", CARD) == []
    assert find_ungrounded("The card shows a man with a ticket.", CARD)


def test_key_elements_the_description_lacks_are_dropped_not_recorded() -> None:
    description = "A grayscale photo of a man filming with a camera on a tripod."
    assert kept_key_elements(["man", "human", "tripod"], description) == ["man", "tripod"]
    # none left: kept as given, so the critic's check sends the description back
    assert kept_key_elements(["human"], description) == ["human"]
    # a repeat is dropped too (the demo's board game listed 'dice' twice)
    assert kept_key_elements(["man", "tripod", "Tripod", "man"], description) == ["man", "tripod"]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=ICMResponder()) as fake:
        yield fake


def test_a_run_sends_the_note_to_the_describer_and_stores_it(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    row = {"image": "a.png", "policy": "icm_sexy", "category": "upper_normal", "note": NOTE}
    options = {
        "manifest": _manifest(tmp_path / "in", [row]),
        "db": tmp_path / "icm.duckdb",
        "rules": ["R1"],
        "roles": {"all": f"openai-compatible:{server.base_url}#fake-model"},
        "role_settings": {"all": {"jitter": "false", "backoff_base_s": "0"}},
        "perception": False,
    }
    asyncio.run(GenerationRun(load_config(None, options)).run())
    describer = [
        r.body for r in server.chat_requests() if r.body and "Describe" in json.dumps(r.body)
    ]
    assert describer and all(NOTE in json.dumps(body) for body in describer)
    with Store.open(tmp_path / "icm.duckdb", read_only=True) as store:
        assert store.scalar("SELECT note FROM samples") == NOTE


def test_beside_a_note_the_describer_gets_only_the_certain_facts() -> None:
    # given every finding as well, qwen wrote them out ("The detector evidence shows ... the
    # largest face covers 4% ... the NSFW probability is low") instead of describing the image
    from agents.describer import _evidence_for
    from agents.perception.evidence import Evidence

    evidence = json.loads((FIXTURES / "astronaut.evidence.json").read_text())
    full = Evidence.load(evidence).as_text()
    inputs = {"evidence": evidence, "evidence_text": full}
    assert _evidence_for(None, inputs) == full
    brief = _evidence_for(NOTE, inputs)
    assert brief is not None and brief.startswith("Measured (certain):")
    assert "in colour" in brief and "a photo" in brief
    assert "NSFW" not in brief and "face" not in brief and "px" not in brief
    lottery = Evidence.load(CARD).certain_text()
    assert '"SCRATCH & WIN"' in lottery and "flat graphic" in lottery


def test_a_person_noun_qualifying_a_thing_is_not_a_person_shown() -> None:
    # the demo's warning sign (a drawn triangle, no person) was rejected for this sentence
    said = "The warning triangle is not framed in a way that would be a child-friendly warning."
    assert find_ungrounded(said, CARD) == []
    assert find_ungrounded("A child stands by the ticket.", CARD)
