"""The Data, Model and Train pages in a small laptop's window (1024 x 768, the sidebar open) and a 1280 x 800
one, in the real server and Debian's Chromium, as a teacher uses them: the example clothes pictures, the
network picker and Advanced settings, one short training watched while it runs and when it is done.

Each assertion is something a person saw there: tab names scrolled out of their row, counts' names cut
("Pictures to lear…"), a table scrolling sideways, switches' names cut, "Start train…", the time left cut to
"at lea…" and a chart's legend over its title. Screenshots in test-artifacts/small-*.png: look at them."""

from __future__ import annotations

import re

import pytest

from tests.serving import needs_browser, streamlit_server
from tests.test_browser import _env, _nav, _no_error_boxes, _shot, browser_page

pytestmark = pytest.mark.browser

WAIT = 60_000
SMALL, LAPTOP = (1024, 768), (1280, 800)
EPOCHS = 15  # last-2 on 56 small pictures: long enough to see it run (a few seconds an epoch at most)

# Text that the browser cut with "…" (or could not show) in the main column or the sidebar.
_CUT = """() => Array.from(document.querySelectorAll('[data-testid=stMain] *, [data-testid=stSidebar] *'))
  .filter(e => e.getBoundingClientRect().width > 0 && getComputedStyle(e).textOverflow === 'ellipsis'
    && e.scrollWidth > e.clientWidth + 1)
  .map(e => e.innerText)"""
# Boxes of the main column that scroll sideways (a table, the tabs' row).
_SIDEWAYS = """() => Array.from(document.querySelectorAll('[data-testid=stMain] *'))
  .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX) && e.scrollWidth > e.clientWidth + 2)
  .map(e => (e.getAttribute('data-testid') || e.className.toString().slice(0, 30)) + ': ' + e.innerText.slice(0, 60))"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module, its data folder holding the example clothes, chosen on the Data page."""
    needs_browser()
    from playwright.sync_api import expect

    folder = tmp_path_factory.mktemp("small-window")
    with streamlit_server(folder, env=_env(folder)) as (url, _port, _log):
        with browser_page(*SMALL, timeout_ms=WAIT) as page:
            page.goto(url)
            expect(page.get_by_role("tab", name=re.compile("Example"))).to_be_visible(timeout=90_000)
            _settled(page)
            page.get_by_role("tab", name=re.compile("Example")).click()
            page.get_by_role("button", name="Use these pictures").click()
            expect(page.get_by_text("Ready to train:")).to_be_visible(timeout=120_000)
        yield url


def _settled(page) -> None:
    """The page's width reported (ui.page_width) and the page drawn again for it."""
    page.wait_for_timeout(2_500)


def _fits(page) -> None:
    assert page.evaluate(_CUT) == []
    assert page.evaluate(_SIDEWAYS) == []
    _no_error_boxes(page)


@pytest.mark.parametrize("size", [SMALL, LAPTOP], ids=["1024", "1280"])
def test_the_data_page_fits_a_small_window(server, size):
    """The four ways in were one row of tabs wider than the page at 1024 px: "A folder on this computer"
    scrolled out of sight behind an arrow. The four counts under the folder's name cut theirs to
    "Pictures to lear…" and "Pictures to chec…"."""
    from playwright.sync_api import expect

    with browser_page(*size, timeout_ms=WAIT) as page:
        page.goto(server)
        expect(page.get_by_text("Ready to train:")).to_be_visible(timeout=WAIT)
        _settled(page)
        tabs = page.get_by_role("tab")
        expect(tabs).to_have_count(4)
        for i in range(4):  # each tab whole inside the page, none behind the row's arrows
            expect(tabs.nth(i)).to_be_in_viewport(ratio=1)
        expect(page.get_by_test_id("stMetricLabel")).to_have_count(4)
        _fits(page)
        sizes = page.get_by_test_id("stMain").locator("li").filter(has_text=re.compile("^(smallest|typical|largest): "))
        expect(sizes).to_have_count(3)
        for i in range(3):  # one line each ("smallest: 112×114" wrapped beside the chart at 1024 px)
            box = sizes.nth(i).bounding_box()
            assert box["height"] < 40, (sizes.nth(i).inner_text(), box)
        if size == LAPTOP:  # room for the long names
            expect(page.get_by_role("tab", name=re.compile("Make classes with the camera"))).to_be_visible()
        page.get_by_role("tab", name=re.compile("Camera|camera")).click()
        expect(page.get_by_text("Name of the first class")).to_be_visible()
        _fits(page)
        _shot(page, f"small-data-{size[0]}.png")


@pytest.mark.parametrize("size", [SMALL, LAPTOP], ids=["1024", "1280"])
def test_the_model_page_fits_a_small_window(server, size):
    """At 1024 px the networks' table scrolled sideways (Speed cut to "Sp", About out of sight); with
    Advanced settings open, its three columns cut the switches' names ("Weigh rare clas…", "Reuse frozen
    bl…", "Earlier blocks l…"); at 1280 px they keep three columns, every name whole."""
    from playwright.sync_api import expect

    with browser_page(*size, timeout_ms=WAIT) as page:
        page.goto(server)
        _nav(page, "Model")
        expect(page.get_by_text("Network to start from")).to_be_visible(timeout=WAIT)
        _settled(page)
        _fits(page)
        if size == SMALL:  # a line says what the table left out, and how to see it
            expect(page.get_by_text(re.compile("The window is narrow, so the table leaves out"))).to_be_visible()
        page.get_by_test_id("stExpander").filter(has_text="Advanced settings").locator("summary").click()
        expect(page.get_by_text("Reuse frozen blocks' output")).to_be_visible()
        _fits(page)
        _shot(page, f"small-model-{size[0]}.png")


def test_a_short_training_reads_whole_in_a_1024_px_window(server):
    """ "Start training" was cut to "Start train…"; while the model trained, the four numbers in a row cut
    their names and the time left ("at lea…"), and the loss chart's legend lay over its title."""
    from playwright.sync_api import expect

    with browser_page(*SMALL, timeout_ms=WAIT) as page:
        page.goto(server)
        _nav(page, "Model")
        page.get_by_text("The last blocks learn too", exact=True).click()
        epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
        epochs.fill(str(EPOCHS))
        epochs.press("Enter")
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text(f"EfficientNet-Lite0, {EPOCHS} epochs")).to_be_visible(timeout=WAIT)
        _nav(page, "Train")
        start = page.get_by_role("button", name="Start training")
        expect(start).to_be_visible(timeout=WAIT)
        _settled(page)
        assert start.evaluate("b => b.scrollWidth <= b.clientWidth"), "the button's name is cut"
        _fits(page)

        start.click()
        values = page.get_by_test_id("stMetricValue")
        expect(values.nth(1)).to_have_text(re.compile(r"\d"), timeout=120_000)  # a time left, in figures
        assert page.evaluate(_CUT) == [], "a live number or its name is cut"
        charts = page.get_by_test_id("stPlotlyChart")
        expect(charts).to_have_count(2)
        loss, accuracy = charts.nth(0).bounding_box(), charts.nth(1).bounding_box()
        assert accuracy["y"] >= loss["y"] + loss["height"] - 1, "the charts are side by side"
        _shot(page, "small-train-running-1024.png")

        expect(page.get_by_text(re.compile(r"^Finished\. Best validation accuracy"))).to_be_visible(timeout=300_000)
        expect(page.get_by_role("link", name="See the results").first).to_be_visible()
        _settled(page)
        _fits(page)
        _shot(page, "small-train-finished-1024.png")


def test_check_my_pictures_shows_fewer_cards_a_row_in_a_small_window(server):
    """Five cards a row left about 100 px a picture at 1024 px, the path under each on five lines: the
    cards take as many a row as can be 150 px wide (ui.page_width.per_row), three there."""
    from playwright.sync_api import expect

    with browser_page(*SMALL, timeout_ms=WAIT) as page:
        page.goto(server)
        expect(page.get_by_text("Ready to train:")).to_be_visible(timeout=WAIT)
        _settled(page)
        page.get_by_role("button", name=re.compile("Check my pictures")).click()
        cards = page.get_by_test_id("stMain").get_by_role("img", name=re.compile("^Picture "))
        expect(cards.first).to_be_visible(timeout=180_000)
        page.wait_for_timeout(1_000)
        widths = [cards.nth(i).bounding_box()["width"] for i in range(cards.count())]
        assert widths and min(widths) >= 120, widths
        _no_error_boxes(page)
        _shot(page, "small-data-checked-1024.png")
