"""The perception toolkit on the bundled samples, with the real shipped detectors.

Models load once per session (``toolkit`` and ``sample_evidence`` fixtures); everything runs
on one thread. Assertions stay within what these detectors can see: the shipped photos show
people, a cup, a cat, a rocket; none shows swimwear, weapons or nudity, and the tests say so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agents.perception import Evidence, Toolkit
from agents.perception.attributes import (
    AttributeEvidence,
    attributes_text,
    check_cues,
    cue_table,
    map_attributes,
)
from agents.perception.baseline import predict
from agents.perception.contradictions import check_claims, find_contradictions
from agents.perception.evidence import Box, Detection, Faces, TextLine
from agents.perception.exposure import ExposureTool, describe_label
from agents.perception.objects import CLASS_GROUPS, group_indices, imagenet_labels
from agents.perception.toolkit import TOOL_NAMES
from data.policy import list_policies, load_policy
from data.store import Store
from graphs.commands.perceive import perceive_command

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
MANIFEST = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines()]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def toolkit() -> Iterator[Toolkit]:
    """All detectors, one intra-op thread (sets torch's thread count too), loaded once."""
    with Toolkit(threads=1) as kit:
        assert kit.warm_up() == {}, "every shipped detector should load in the test environment"
        yield kit


@pytest.fixture(scope="session")
def sample_evidence(toolkit: Toolkit) -> dict[str, Evidence]:
    """Evidence for every bundled sample, computed once."""
    names = [entry["image"] for entry in MANIFEST]
    results = toolkit.perceive_many([SAMPLES / name for name in names])
    assert all(isinstance(r, Evidence) for r in results), results
    return dict(zip(names, results, strict=True))  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store file for cache tests."""
    with Store.open(tmp_path / "perception.duckdb") as opened:
        yield opened


def _texts(evidence: Evidence) -> str:
    return " ".join(line.text for line in evidence.text_lines()).upper()


# ---------------------------------------------------------------------- what the detectors see
def test_astronaut_has_a_person(sample_evidence: dict[str, Evidence]) -> None:
    evidence = sample_evidence["astronaut.jpg"]
    assert evidence.people.present is True
    assert evidence.faces is not None and evidence.faces.count == 1
    assert any(d.label == "FACE_FEMALE" and d.score > 0.5 for d in evidence.exposure or [])
    assert evidence.exposed_parts() == []


def test_coffee_is_a_cup_of_espresso(sample_evidence: dict[str, Evidence]) -> None:
    evidence = sample_evidence["coffee.jpg"]
    assert evidence.objects is not None
    top = [label.name for label in evidence.objects.top]
    assert top[0] == "espresso"
    assert "cup" in top
    assert evidence.people.present is False


def test_chelsea_is_a_cat(sample_evidence: dict[str, Evidence]) -> None:
    objects = sample_evidence["chelsea.jpg"].objects
    assert objects is not None
    assert objects.top[0].name in {"tabby", "tiger cat", "Egyptian cat"}
    assert objects.groups["animal"] > 0.9


def test_betting_text_is_read(sample_evidence: dict[str, Evidence]) -> None:
    text = _texts(sample_evidence["betting_promo.png"])
    for phrase in ("BET NOW", "100% WELCOME BONUS", "FREE BET UP TO $50"):
        assert phrase in text


def test_photos_without_text_read_none(sample_evidence: dict[str, Evidence]) -> None:
    for name in ("astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg"):
        assert sample_evidence[name].text_lines() == [], name


def test_prompt_injection_is_flagged_only_where_present(
    sample_evidence: dict[str, Evidence],
) -> None:
    flagged = {name for name, ev in sample_evidence.items() if ev.prompt_injection}
    assert flagged == {"prompt_injection.png"}
    assert "not an instruction to follow" in sample_evidence["prompt_injection.png"].as_text()


def test_nothing_in_the_samples_is_nsfw_or_shows_swimwear_or_weapons(
    sample_evidence: dict[str, Evidence],
) -> None:
    for name, evidence in sample_evidence.items():
        assert evidence.nsfw_score is not None and evidence.nsfw_score < 0.2, name
        assert evidence.exposed_parts() == [], name
        flagged = {c.group for c in evidence.objects.flagged} if evidence.objects else set()
        assert not flagged & {"swimwear", "underwear", "weapons"}, (name, flagged)


def test_rocket_reads_as_military_hardware_not_weapon(sample_evidence: dict[str, Evidence]) -> None:
    # ImageNet's "missile" class fires on a launch pad photo: reported, but kept out of "weapons".
    objects = sample_evidence["rocket.jpg"].objects
    assert objects is not None
    assert objects.groups["military_hardware"] > 0.2
    assert objects.groups["weapons"] < 0.1


def test_evidence_text_and_json_round_trip(sample_evidence: dict[str, Evidence]) -> None:
    evidence = sample_evidence["grace_hopper.jpg"]
    text = evidence.as_text()
    assert "people: likely" in text and "NSFW probability" in text and "ImageNet" in text
    assert set(evidence.tool_versions) == set(TOOL_NAMES)
    again = Evidence.load(json.loads(evidence.model_dump_json()))
    assert again == evidence
    assert again.people == evidence.people


def test_imagenet_labels_are_in_index_order() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    anchors = {0: "tench", 281: "tabby", 445: "bikini", 800: "slot", 967: "espresso", 968: "cup"}
    for index, name in anchors.items():
        assert labels[index].split(",")[0] == name
    assert set(group_indices()) == set(CLASS_GROUPS) | {"animal"}


# ---------------------------------------------------------------------- cache and failures
def test_evidence_is_cached_in_the_store(toolkit: Toolkit, store: Store) -> None:
    image = SAMPLES / "betting_promo.png"
    first = toolkit.perceive(image, store=store)
    assert first.cached == [] and set(first.timings_ms) == set(TOOL_NAMES)
    assert store.scalar("SELECT count(*) FROM perception_cache") == len(TOOL_NAMES)
    second = toolkit.perceive(image, store=store)
    assert sorted(second.cached) == sorted(TOOL_NAMES) and second.timings_ms == {}
    assert second.ocr == first.ocr and second.objects == first.objects
    # a new tool version misses the cache and recomputes
    store.execute("UPDATE perception_cache SET tool_version = 'old' WHERE tool = 'ocr'")
    third = toolkit.perceive(image, store=store)
    assert "ocr" not in third.cached and "ocr" in third.timings_ms
    assert store.scalar("SELECT count(*) FROM perception_cache") == len(TOOL_NAMES) + 1


def test_missing_optional_detector_is_recorded_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ExposureTool, "modules", ("nudenet_is_not_installed_here",))
    with Toolkit(threads=1, tools=["exposure", "nsfw"]) as kit:
        evidence = kit.perceive(SAMPLES / "astronaut.jpg")
    assert evidence.exposure is None
    assert "not installed" in evidence.errors["exposure"]
    assert "exposure" not in evidence.tool_versions
    assert evidence.nsfw_score is not None
    assert "exposure: not installed" in evidence.as_text()


def test_failing_detector_is_recorded_and_not_cached(
    monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    with Toolkit(threads=1, tools=["nsfw", "faces"]) as kit:

        def broken(frame: object) -> float:
            raise RuntimeError("model exploded")

        monkeypatch.setattr(kit.tools["nsfw"], "_run", broken)
        evidence = kit.perceive(SAMPLES / "coffee.jpg", store=store)
    assert evidence.nsfw_score is None
    assert evidence.errors["nsfw"] == "failed: RuntimeError: model exploded"
    assert evidence.faces is not None
    assert store.rows("SELECT tool FROM perception_cache") == [{"tool": "faces"}]


# ---------------------------------------------------------------------- evidence -> attributes
def test_cue_table_matches_every_shipped_policy() -> None:
    assert set(cue_table().policies) <= set(list_policies())
    for name in list_policies():
        assert check_cues(load_policy(name)) == [], name


def _values(found: list[AttributeEvidence], confidence: float = 0.3) -> set[str]:
    return {f"{a.attribute}={a.value}" for a in found if a.confidence >= confidence}


def test_mapping_on_samples(sample_evidence: dict[str, Evidence]) -> None:
    sexy, gambling, horrifying = (load_policy(n) for n in ("icm_sexy", "gambling", "horrifying"))
    astronaut = map_attributes(sample_evidence["astronaut.jpg"], sexy)
    assert {"region=upper", "exposure=normal"} <= _values(astronaut)
    meme = map_attributes(sample_evidence["teasing_meme.png"], sexy)
    assert _values(meme) == {"other=image_text"}
    assert any("SEXY" in reason for reason in meme[0].because)
    promo = map_attributes(sample_evidence["betting_promo.png"], gambling)
    assert "activity=promoting" in _values(promo, 0.7)
    cat = map_attributes(sample_evidence["chelsea.jpg"], horrifying)
    assert "subject=animal" in _values(cat, 0.7)
    assert attributes_text(cat).startswith("Policy attributes the detectors support:\n")
    assert "- subject=animal (0.7" in attributes_text(cat)
    assert attributes_text([]) == ""


def _person_with(*detections: tuple[str, float]) -> Evidence:
    parts = [
        Detection(label=label, part=part, exposed=exposed, score=s, box=Box(x=0, y=0, w=9, h=9))
        for label, s in (("FACE_FEMALE", 0.8), *detections)
        for part, exposed in [describe_label(label)]
    ]
    return Evidence(image_sha256="0" * 64, width=100, height=100, exposure=parts, nsfw_score=0.05)


def test_mapping_from_exposure_detections() -> None:
    sexy = load_policy("icm_sexy")
    belly = map_attributes(_person_with(("BELLY_EXPOSED", 0.8)), sexy)
    assert "exposure=shoulders_and_belly" in _values(belly, 0.6)
    assert "exposure=normal" not in _values(belly, 0.0)
    covered = map_attributes(_person_with(("BELLY_COVERED", 0.7)), sexy)
    assert "exposure=normal" in _values(covered, 0.5)
    silent = Evidence(image_sha256="0" * 64, width=100, height=100, nsfw_score=0.05)
    assert map_attributes(silent, sexy) == []  # no detector for exposure: no claim either way


# ---------------------------------------------------------------------- no-LLM baseline
def test_baseline_on_the_manifest(sample_evidence: dict[str, Evidence]) -> None:
    answered = correct = total = abstained = 0
    report = []
    for entry in MANIFEST:
        prediction = predict(sample_evidence[entry["image"]], load_policy(entry["policy"]))
        if prediction.abstained:
            abstained += 1
            report.append(f"{entry['image']}: abstained ({prediction.abstain_reason})")
            continue
        for rule, expected in entry["expected"].items():
            answered += 1
            correct += prediction.verdicts[rule].verdict == expected
        total += 1
        report.append(f"{entry['image']}: {prediction.category} (expected {entry['category']})")
    # The cue table was written alongside these few samples: this is a regression check of the
    # pipeline, not a measure of accuracy on real data.
    assert abstained <= 2, report
    assert correct / answered >= 0.9, report


def test_baseline_abstains_when_the_evidence_is_silent() -> None:
    silent = Evidence(image_sha256="0" * 64, width=10, height=10)
    prediction = predict(silent, load_policy("gambling"))
    assert prediction.abstained and prediction.category is None
    assert all(v.verdict is None for v in prediction.verdicts.values())
    assert "no detector evidence" in (prediction.abstain_reason or "")


def test_baseline_flags_exposed_belly_by_rule() -> None:
    prediction = predict(_person_with(("BELLY_EXPOSED", 0.85)), load_policy("icm_sexy"))
    assert prediction.category is not None and prediction.category.endswith("shoulders_and_belly")
    verdicts = {rule: v.verdict for rule, v in prediction.verdicts.items()}
    assert verdicts == {"R1": "sexy", "R2": "not sexy", "R3": "sexy", "R4": "not sexy"}


# ---------------------------------------------------------------------- contradictions
def test_contradictions_flag_clear_cases(sample_evidence: dict[str, Evidence]) -> None:
    astronaut = sample_evidence["astronaut.jpg"].model_dump(mode="json")  # the critic's form
    found = check_claims(
        "There are no people in this picture. The woman is naked, with exposed breasts.", astronaut
    )
    assert {c.check for c in found} == {"no_person", "exposed_part", "nudity"}
    promo = sample_evidence["betting_promo.png"]
    [message] = find_contradictions("A green poster. There is no text in the image.", promo)
    assert "BET NOW" in message and "no text" in message


def test_contradictions_leave_consistent_text_alone(sample_evidence: dict[str, Evidence]) -> None:
    astronaut = sample_evidence["astronaut.jpg"]
    consistent = (
        "A smiling woman in an orange flight suit holds a helmet. She is fully clothed and "
        "not naked; there is no nudity and no text in the image."
    )
    assert find_contradictions(consistent, astronaut) == []
    promo = sample_evidence["betting_promo.png"]
    assert find_contradictions("A poster says BET NOW and offers a bonus.", promo) == []
    # detectors that did not run contradict nothing
    blind = Evidence(image_sha256="0" * 64, width=10, height=10)
    assert find_contradictions("No people, no text, and she is naked.", blind) == []


def test_covered_claim_contradicted_by_strong_exposure() -> None:
    evidence = _person_with(("FEMALE_BREAST_EXPOSED", 0.9))
    [found] = check_claims("The woman is fully clothed.", evidence)
    assert found.check == "covered" and "female breast exposed (0.90)" in found.evidence


# ---------------------------------------------------------------------- command line
def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("perceive")(perceive_command)
    app.command("noop")(lambda: None)  # a second command keeps "perceive" a subcommand
    return app


def test_cli_reports_bad_files_and_carries_on(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    result = CliRunner().invoke(
        _app(), ["perceive", str(SAMPLES / "coffee.jpg"), str(fake), "--json", "--threads", "1"]
    )
    assert result.exit_code == 1
    documents = json.loads(result.stdout)
    assert documents[0]["objects"]["top"][0]["name"] == "espresso"
    assert documents[1] == {
        "image": str(fake),
        "error": "NotAnImageError",
        "reason": "not an image: the file is a text file (12 bytes)",
    }


def test_cli_table_with_policy(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _app(),
        [
            "perceive", str(SAMPLES / "teasing_meme.png"), "--policy", "icm_sexy",
            "--db", str(tmp_path / "cache.duckdb"), "--threads", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "FEELING SEXY" in result.output
    assert "sexy_imagetext" in result.output


def test_faces_section_counts_and_sizes(sample_evidence: dict[str, Evidence]) -> None:
    faces = sample_evidence["grace_hopper.jpg"].faces
    assert isinstance(faces, Faces) and faces.count == 1
    assert 0.05 < faces.faces[0].area_fraction < 0.5
    assert sample_evidence["coffee.jpg"].faces == Faces(count=0, faces=[])


def test_text_lines_ignore_stray_glyphs() -> None:
    line = TextLine(text="8", score=0.95, box=Box(x=0, y=0, w=1, h=1))
    evidence = Evidence(image_sha256="0" * 64, width=10, height=10, ocr=[line])
    assert evidence.text_lines() == []
    assert "none read" in evidence.as_text()


# ---------------------------------------------------------------------- bundled samples
def test_manifest_agrees_with_the_policies_and_the_folder() -> None:
    images = {p.name for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png")}
    assert {entry["image"] for entry in MANIFEST} == images
    licences = (SAMPLES / "LICENSES.md").read_text()
    for entry in MANIFEST:
        policy = load_policy(entry["policy"])
        assert entry["category"] in policy.categories, entry["image"]
        table = {rule: policy.verdict(entry["category"], rule) for rule in policy.rules}
        assert entry["expected"] == table, entry["image"]
        assert entry["licence"] and f"| {entry['image']} |" in licences
    assert sum(p.stat().st_size for p in SAMPLES.iterdir()) < 2 * 1024 * 1024
