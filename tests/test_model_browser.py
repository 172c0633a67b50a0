"""The Model page in a real browser: the "Advanced settings" expander stays
open while the settings inside it change (the real server, driven in Debian's
Chromium as a person would)."""

from __future__ import annotations

import contextlib
import re

import pytest

from tests.serving import CHROMIUM, CHROMIUM_ARGS, choose, needs_browser, streamlit_server
from tests.test_browser import _env, _nav, _no_error_boxes, _shot
from ui import words

pytestmark = pytest.mark.browser


@contextlib.contextmanager
def _model_page(tmp_path, width: int, height: int):
    """(page, expect): a real server and Chromium in a window `width` x `height`, on the Model page."""
    sync_api = needs_browser()
    with streamlit_server(tmp_path, env=_env(tmp_path)) as (url, _port, _log), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        try:
            page.goto(url)
            _nav(page, "Model")
            yield page, sync_api.expect
        finally:
            browser.close()


def test_advanced_settings_stay_open_while_the_settings_inside_change(tmp_path):
    """QA: the expander closed by itself when a setting inside it changed.
    Streamlit told it apart by its place on the page: switching "Earlier
    blocks learn more gently" off shows the hint about a smaller rate above
    it, and the expander came back closed, its settings hidden."""
    with _model_page(tmp_path, width=1300, height=900) as (page, expect):
        page.get_by_text(words.PRESETS["full"], exact=True).click()
        expect(page.get_by_text(re.compile("every block is trained", re.I)).first).to_be_visible(timeout=60_000)
        hint = page.get_by_text("usually works better", exact=False)
        expect(hint).to_have_count(0)  # earlier blocks learn more gently: no hint yet

        page.get_by_test_id("stExpander").filter(has_text="Advanced settings").locator("summary").click()
        gently = page.get_by_test_id("stCheckbox").filter(has_text="Earlier blocks learn more gently")
        decay = page.get_by_text("Weight decay", exact=True)
        expect(decay).to_be_visible()
        # A change inside that adds a line above the expander (the rerun draws the hint).
        gently.locator("label").click()
        expect(hint).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1_000)  # a rebuilt expander would have closed by now
        expect(decay).to_be_visible()
        expect(gently.locator("input")).not_to_be_checked()
        # A change that moves nothing above it, and a select box chosen as a person does.
        choose(page, "Optimiser", words.setting_value("optimizer", "sgd"))
        expect(page.get_by_text("Momentum", exact=True)).to_be_visible()
        gently.locator("label").click()
        expect(hint).to_have_count(0, timeout=30_000)  # the line above goes again
        page.wait_for_timeout(1_000)
        expect(decay).to_be_visible()
        _no_error_boxes(page)
        _shot(page, "2-model-advanced-open.png")
        # Closed by hand, it stays closed through a rerun.
        page.get_by_test_id("stExpander").filter(has_text="Advanced settings").locator("summary").click()
        expect(decay).not_to_be_visible()
        page.get_by_text(words.PRESETS["last"], exact=True).click()
        expect(page.get_by_text("How many of the last blocks learn")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1_000)
        expect(decay).not_to_be_visible()


_SPILLS = """() => Array.from(document.querySelectorAll('[data-testid=stMain] div[style*="205px"]'))
  .filter(t => t.scrollHeight > t.clientHeight + 1)  // (sideways, each but the last holds its arrow)
  .map(t => t.innerText.replace(/\\s+/g, ' ').slice(0, 60))"""
_CUT = """() => Array.from(document.querySelectorAll('[data-testid=stMain] [data-testid=stMetricValue] *'))
  .filter(e => getComputedStyle(e).textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth)
  .map(e => e.innerText)"""


def test_the_blocks_fit_their_tiles_in_a_1024_px_window(tmp_path):
    """QA: in a 1024 px window (or a 1280 px one zoomed to 125 %) with the sidebar open, the eight tiles of
    MobileNetV2's blocks were 60 px wide: "learns from epoch 2" and "rate ×0.016" ran out of them, over the
    count of numbers that learn, itself cut to "2,227,…". There the tiles go in two rows; at 1300 px, one."""
    with _model_page(tmp_path, width=1024, height=800) as (page, expect):
        choose(page, "Network to start from", re.compile(r"^MobileNetV2 · "))
        page.get_by_text(words.PRESETS["full"], exact=True).click()
        expect(page.get_by_text(re.compile("every block is trained", re.I)).first).to_be_visible(timeout=60_000)
        tiles = page.locator('[data-testid=stMain] div[style*="205px"]')
        expect(tiles).to_have_count(8)
        page.wait_for_timeout(2_000)  # the page's width is reported, and the page drawn again
        tops = {round(tiles.nth(i).bounding_box()["y"]) for i in range(8)}
        assert len(tops) == 2, tops  # two rows
        assert page.evaluate(_SPILLS) == []
        assert page.evaluate(_CUT) == []
        _no_error_boxes(page)
        _shot(page, "2-model-blocks-1024.png")

        page.set_viewport_size({"width": 1300, "height": 800})
        page.wait_for_timeout(2_000)
        expect(tiles).to_have_count(8)
        assert len({round(tiles.nth(i).bounding_box()["y"]) for i in range(8)}) == 1  # one row
        assert page.evaluate(_SPILLS) == []
