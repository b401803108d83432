"""Images blurred until revealed, in a real browser (headless Chromium via Playwright): the
served viewer and the exported report show thumbnails and the full image blurred, a click
reveals one (CSS only: the pages carry no script), ``--no-blur`` turns it off, every page says
which setting is on, and the detector flags stand beside the blurred image.

Screenshots are written to ``docs/img/`` when ``ICM_DOC_SHOTS=1`` (the ones docs/dataset.md
shows), else to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import CHROMIUM, launched_chromium, serve
from viewer_data import generated_db

from data.store import Store, to_json, utcnow
from graphs.viewer.export import export_report
from graphs.viewer.flags import detector_flags

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / ("docs/img" if os.environ.get("ICM_DOC_SHOTS") == "1" else "test-artifacts")

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with launched_chromium(sync_api) as chromium:
        yield chromium


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1300, "height": 850})
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def flagged_db(tmp_path_factory) -> tuple[Path, str]:
    """A copy of the generated store whose retried sample has detector evidence stored."""
    gen = generated_db()
    db = tmp_path_factory.mktemp("blur") / "icm.duckdb"
    shutil.copy(gen.db, db)
    with Store.open(db) as store:
        sha = store.scalar("SELECT image_sha256 FROM samples WHERE sample_id = ?", [gen.retried])
        exposure = [{"label": "BELLY_EXPOSED", "part": "belly", "exposed": True, "score": 0.71,
                     "box": {"x": 1, "y": 2, "w": 3, "h": 4}}]  # fmt: skip
        store.insert("perception_cache", [
            {"image_sha256": sha, "tool": "nsfw", "tool_version": "t", "evidence_json": "0.83",
             "created_at": utcnow()},
            {"image_sha256": sha, "tool": "exposure", "tool_version": "t",
             "evidence_json": to_json(exposure), "created_at": utcnow()},
        ])  # fmt: skip
    return db, gen.retried


def blurred(page, selector: str) -> bool:
    """Whether the element's computed CSS filter blurs it."""
    value = page.eval_on_selector(selector, "e => getComputedStyle(e).filter")
    return "blur(" in value


def loaded(page, selector: str, timeout_s: float = 10) -> None:
    check = f"[...document.querySelectorAll({selector!r})].every(i => i.complete && i.naturalWidth)"
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(check):
        assert time.monotonic() < deadline, f"{selector} did not load"
        time.sleep(0.05)


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"viewer-blur-{name}.png"), full_page=False)


def test_the_full_image_is_blurred_until_clicked_with_flags_beside_it(page, flagged_db) -> None:
    db, sample_id = flagged_db
    with serve(db) as base:
        page.goto(f"{base}/samples/{sample_id}")
        loaded(page, "img.full")
        assert "Images are blurred" in page.inner_text("#blur-setting")
        assert blurred(page, "img.full")
        flags = page.inner_text("ul.detector-flags")
        assert "NSFW score 0.83 (high)" in flags and "exposed: belly 0.71" in flags
        shot(page, "sample-blurred")
        page.click("img.full")
        assert not blurred(page, "img.full")
        shot(page, "sample-revealed")
        page.click("img.full")  # a second click blurs it again
        assert blurred(page, "img.full")


def test_thumbnails_are_blurred_and_one_click_reveals_only_that_one(page, flagged_db) -> None:
    db, _ = flagged_db
    gen = generated_db()
    with serve(db) as base:
        page.goto(f"{base}/runs/{gen.run_id}")
        loaded(page, "img.thumb")
        count = page.locator("img.thumb").count()
        assert count == 5
        assert all(blurred(page, f"tr.sample-row:nth-child({n}) img.thumb")
                   for n in range(1, count + 1))  # fmt: skip
        shot(page, "run-blurred")
        page.click("tr.sample-row:nth-child(2) img.thumb")
        assert not blurred(page, "tr.sample-row:nth-child(2) img.thumb")
        assert blurred(page, "tr.sample-row:nth-child(1) img.thumb")
        assert "Images are blurred" in page.inner_text("#blur-setting")
        page.goto(f"{base}/")  # the setting is said on every page, not only those with images
        assert "Images are blurred" in page.inner_text("#blur-setting")


def test_no_blur_shows_images_and_says_so(page, flagged_db) -> None:
    db, sample_id = flagged_db
    with serve(db, blur=False) as base:
        page.goto(f"{base}/samples/{sample_id}")
        loaded(page, "img.full")
        assert not blurred(page, "img.full")
        assert "unblurred" in page.inner_text("#blur-setting")


def test_the_exported_report_blurs_until_clicked(page, flagged_db, tmp_path: Path) -> None:
    db, _ = flagged_db
    out = tmp_path / "report.html"
    export_report(db, out)
    page.goto(out.as_uri())
    loaded(page, "img.full")
    assert "Images are blurred" in page.inner_text("#blur-setting")
    assert blurred(page, "img.full") and blurred(page, "img.thumb")
    page.locator("img.full").first.click()
    assert not blurred(page, "img.full")
    plain = tmp_path / "plain.html"
    export_report(db, plain, blur=False)
    page.goto(plain.as_uri())
    assert not blurred(page, "img.full")


def test_detector_flags_read_the_stored_evidence() -> None:
    rows = [
        {"tool": "nsfw", "evidence": 0.12},
        {"tool": "exposure", "evidence": [
            {"part": "belly", "exposed": True, "score": 0.2},
            {"part": "face (female)", "exposed": False, "score": 0.9},
        ]},
        {"tool": "ocr", "evidence": {"lines": ["hello"]}},
    ]  # fmt: skip
    assert detector_flags(rows) == ["NSFW score 0.12 (low)", "no exposed body parts detected"]
    assert detector_flags([]) == []
