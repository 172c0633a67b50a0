"""Long names in the real browser: the Playground's table of a folder's
results, where a picture's path of 120 characters (no spaces) or with spaces
shows shortened in the middle on one line, never cut at the bottom of its row,
and whole when a person double-clicks it, at 1280 and 1024 px; and the Runs
table, where runs of the same settings would read alike (the hidden Folder
column tells them apart only in the table's menu).

The real server (`streamlit run app.py`), Debian's Chromium, the session's
EfficientNet-Lite0 linear probe on the repository's photos (packaged weights).
Screenshots go to test-artifacts/ (look at them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.serving import needs_browser, streamlit_server
from tests.test_browser import _env, _nav, _no_error_boxes, _shot, browser_page

pytestmark = pytest.mark.browser

NO_SPACES = "IMG_20230612_" + "x" * 95 + "_final.jpg"  # 120 characters, no spaces
WITH_SPACES = "the photo my class took of a hat on the school trip to the botanical garden in june.jpg"


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    needs_browser()
    folder = tmp_path_factory.mktemp("long-names")
    with streamlit_server(folder, env=_env(folder)) as (url, _port, _log):
        yield {"url": url, "folder": folder}


def _pictures_with_long_names(small_data: Path, folder: Path) -> Path:
    """Two of the validation photos under long names, one in a subfolder with a long name too."""
    hats = sorted((small_data / "val" / "hat").glob("*.jpg"))
    (folder / "hat").mkdir(parents=True)
    shutil.copy(hats[0], folder / "hat" / NO_SPACES)
    deep = folder / "pictures from the second afternoon of the trip"
    deep.mkdir()
    shutil.copy(hats[1], deep / WITH_SPACES)
    # Not a picture: its long reason in the Problem column makes the rows as tall as two or three lines.
    (folder / "hat" / "notes.jpg").write_text("notes from the lesson, saved with the wrong ending")
    return folder


def test_long_picture_names_show_shortened_on_one_line_and_whole_on_a_double_click(
    app_server, small_data, linear_probe_run, tmp_path
):
    from playwright.sync_api import expect

    shutil.copytree(linear_probe_run, Path(app_server["folder"]) / "runs" / linear_probe_run.name)
    folder = _pictures_with_long_names(small_data, tmp_path / "trip")
    whole = f"hat/{NO_SPACES}"
    with browser_page(1280, 900, timeout_ms=60_000) as page:
        page.goto(app_server["url"])
        _nav(page, "Playground")
        box = page.get_by_role("textbox", name="Folder of pictures")
        box.fill(str(folder))
        box.press("Enter")
        page.get_by_role("button", name="Name them all").click()
        expect(page.get_by_text("Named 2 pictures")).to_be_visible(timeout=120_000)
        table = page.get_by_test_id("stDataFrame").first
        cells = table.locator("td")
        # The grid's accessible table holds each path whole (what a screen reader reads, and a copy takes).
        expect(cells.filter(has_text=NO_SPACES)).to_have_count(1)
        texts = [t.strip() for t in cells.all_text_contents()]
        assert whole in texts and f"pictures from the second afternoon of the trip/{WITH_SPACES}" in texts
        _no_error_boxes(page)
        _shot(page, "long-names-playground-1280.png")

        # A double click on the first picture's cell opens it whole.
        table.scroll_into_view_if_needed()
        area = table.bounding_box()
        page.mouse.dblclick(area["x"] + 60, area["y"] + 35 + 20)  # below the 35 px header
        overlay = page.locator("[id^=gdg-overlay] textarea")  # the grid's box for a cell's whole text
        expect(overlay).to_have_value(whole, timeout=10_000)
        _shot(page, "long-names-playground-whole-1280.png")
        page.keyboard.press("Escape")

        page.set_viewport_size({"width": 1024, "height": 900})  # a small laptop's window, the sidebar open
        page.wait_for_timeout(1500)
        _no_error_boxes(page)
        _shot(page, "long-names-playground-1024.png")


def test_runs_of_the_same_settings_are_told_apart_in_the_runs_table(app_server, linear_probe_run):
    """Three copies of one run (the same settings, two started in the same second): in a 1280 px window,
    where the Started column shows the minute, and in a 1024 px one, where it is left out, each row says
    when its run started, to the second, and the two of the same second their folders' names."""
    from playwright.sync_api import expect

    runs = Path(app_server["folder"]) / "runs"
    if runs.is_dir():  # the runs an earlier test left with this server: the table holds these three alone
        for other in runs.iterdir():
            shutil.rmtree(other)
    copies = [runs / f"{linear_probe_run.name}-copy-{i}" for i in range(3)]
    for i, copy in enumerate(copies):
        shutil.copytree(linear_probe_run, copy)
        status = json.loads((copy / "status.json").read_text())
        # 10 s into the run's minute, the third 7 s later: one minute in the Started column, whatever the clock
        minute_in = status["created"] // 60 * 60 + 10
        (copy / "status.json").write_text(json.dumps({**status, "created": minute_in + 7 * (i == 2)}))
    with browser_page(1280, 900, timeout_ms=60_000) as page:
        page.goto(app_server["url"])
        _nav(page, "Runs")
        table = page.get_by_test_id("stDataFrame").first
        for width in (1280, 1024):
            page.set_viewport_size({"width": width, "height": 900})
            expect(table.locator("td").filter(has_text=" · started ")).to_have_count(3, timeout=30_000)
            learned = [t for t in table.locator("td").all_text_contents() if t.startswith("Only the new last")]
            assert len(set(learned)) == len(learned), learned  # no two rows alike
            assert sum(" · started " in t for t in learned) == len(learned), learned
            for copy in copies[:2]:
                assert sum(t.endswith(copy.name) for t in learned) == 1, learned
            _no_error_boxes(page)
            _shot(page, f"alike-runs-{width}.png")
