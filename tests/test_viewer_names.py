"""Issue 23 (viewer): run names with any character work, and model text and file names are
bidi-isolated (an unclosed RIGHT-TO-LEFT OVERRIDE cannot reorder the page or disguise a name)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from fastapi.testclient import TestClient
from viewer_data import bulk_db

from data.store import Store
from graphs.viewer.app import create_app
from graphs.viewer.export import export_report
from graphs.viewer.render import stylesheet

RLO = "\u202e"
RUN = "team/exp 1?x=1#frag%2F"


def _db(tmp_path: Path) -> Path:
    db = bulk_db(tmp_path / "v.duckdb", 4, run_id=RUN)
    with Store.open(db) as store:
        store.execute(
            "UPDATE samples SET reasons_json = ? WHERE sample_id = 's0000000'",
            [f'["explainer[R1]: {RLO}the legs are fine"]'],
        )
        store.execute(
            "UPDATE samples SET image_path = ? WHERE sample_id = 's0000001'",
            [str(tmp_path / f"{RLO}gpj.exe")],
        )
    return db


def test_a_run_name_with_any_character_links_to_its_page(tmp_path: Path) -> None:
    client = TestClient(create_app(_db(tmp_path)), base_url="http://127.0.0.1")
    front = client.get("/")
    links = re.findall(r'class="run-link" href="([^"]+)"', front.text)
    assert len(links) == 1 and unquote(links[0]) == f"/runs/{RUN}"
    page = client.get(links[0])
    assert page.status_code == 200 and "s0000000" in page.text
    sample = client.get("/samples/s0000000")
    back = re.search(r'href="(/runs/[^"]+)"', sample.text)
    assert back is not None and client.get(back.group(1)).status_code == 200


def test_bidi_controls_are_shown_not_obeyed(tmp_path: Path) -> None:
    db = _db(tmp_path)
    client = TestClient(create_app(db), base_url="http://127.0.0.1")
    pages = [client.get(f"/runs/{RUN.replace('/', '%2F').replace('?', '%3F').replace('#', '%23')}")]
    pages += [client.get("/samples/s0000000"), client.get("/samples/s0000001")]
    report = tmp_path / "report.html"
    export_report(db, report)
    texts = [p.text for p in pages] + [report.read_text()]
    for text in texts:
        assert RLO not in text
    assert "[U+202E]the legs are fine" in pages[0].text + pages[1].text
    assert "[U+202E]gpj.exe" in pages[2].text
    assert "unicode-bidi: isolate" in stylesheet()
