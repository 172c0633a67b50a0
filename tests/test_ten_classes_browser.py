"""Compare and Results with ten classes, in the real server and Chromium, in a 1280 x 900 and a 1024 x 768
window (a small laptop's, the sidebar open): three real runs on the ten kinds of clothes (two linear probes
told apart by their settings, and a fine-tune), their curves' legends inside their charts, one entry per run,
each named by what tells the runs apart (not the minute they started); the leaderboard's mark of each run in
its lines' colour; a confusion matrix whose squares a class can read; tables that do not scroll sideways, a
long class name whole on two lines; the hardest pictures' toggles with their names whole and pictures wide
enough for their captions; the "Runs to compare" chips show what tells their runs apart before they are
cut. Saves a screenshot of each page at each width in test-artifacts/ (look at them)."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import time

import pytest

from tests.folders import PACKAGED_BACKBONE, small_copy
from tests.serving import needs_browser, streamlit_server
from tests.test_browser import (
    ARTIFACTS,
    _env,
    _fits_the_page,
    _nav,
    _no_error_boxes,
    _no_sideways_scroll,
    _shot,
    browser_page,
)

pytestmark = pytest.mark.browser

SIZES = ((1280, 900), (1024, 768))
LONG_CLASS = ("outwear", "coats, jackets and other outerwear")  # a class named as a teacher names it
MIN_SQUARE_PX = 40  # a confusion-matrix square with room for its count, read from the back of a classroom

# Each chart's legend, its entries and the chart's own box, as the browser lays them out.
_LEGENDS = """() => Array.from(document.querySelectorAll('[data-testid=stPlotlyChart]')).map(chart => {
    const c = chart.getBoundingClientRect(), legend = chart.querySelector('.legend');
    const l = legend ? legend.getBoundingClientRect() : null;
    return {chart: [c.left, c.right], legend: l && [l.left, l.right],
            entries: Array.from(chart.querySelectorAll('.legend .traces')).map(t => t.textContent)};
})"""
_INSIDE = f"""() => {{
    const charts = ({_LEGENDS})();
    return charts.length >= 2 && charts.every(c => c.legend && c.legend[0] >= c.chart[0] - 1
                                                 && c.legend[1] <= c.chart[1] + 1);
}}"""


@pytest.fixture(scope="module")
def ten_class_server(trained_run, clothing10, tmp_path_factory):
    """A server on a runs folder of three finished runs of EfficientNet-Lite0 (packaged weights) on a small
    copy of the ten kinds of clothes: {"url": ..., "runs": [the three folders, oldest first]}."""
    needs_browser()
    data = small_copy(clothing10, tmp_path_factory.mktemp("data") / "clothing10", train=6, val=4)
    for split in ("train", "val"):
        (data / split / LONG_CLASS[0]).rename(data / split / LONG_CLASS[1])
    common = dict(backbone=PACKAGED_BACKBONE, device="cpu", seed=0, augment="none")
    made = [
        trained_run(data, strategy="linear", epochs=2, lr=0.001, **common),
        trained_run(data, strategy="linear", epochs=3, lr=0.003, **common),
        trained_run(data, strategy="last-2", epochs=2, **common),
    ]
    folder = tmp_path_factory.mktemp("ten-classes")
    runs = [folder / "runs" / f"{i}-{run.name}" for i, run in enumerate(made)]  # newest last, as trained
    for run, copy in zip(made, runs):
        shutil.copytree(run, copy)
    with streamlit_server(folder, env=_env(folder)) as (url, _port, _log):
        yield {"url": url, "runs": runs}


def _legends_fit(page, runs: int) -> None:
    """Each curve chart's legend lies inside its chart, with one entry per run, each a different run."""
    from playwright.sync_api import Error as PlaywrightError

    with contextlib.suppress(PlaywrightError):  # the boxes below say more than a timeout
        page.wait_for_function(_INSIDE, timeout=30_000)
    charts = page.evaluate(_LEGENDS)
    curves = [c for c in charts if c["legend"]]
    assert len(curves) == 2, charts
    for chart in curves:
        (left, right), (chart_left, chart_right) = chart["legend"], chart["chart"]
        assert left >= chart_left - 1 and right <= chart_right + 1, f"the legend runs off its chart: {chart}"
        assert len(chart["entries"]) == runs and len(set(chart["entries"])) == runs, chart["entries"]


def _squares_readable(page, classes: int) -> None:
    """The confusion matrix's squares are at least MIN_SQUARE_PX wide, and the matrix ends inside the page."""
    chart = page.locator('[data-testid="stPlotlyChart"]').filter(has=page.locator(".heatmaplayer")).first
    chart.scroll_into_view_if_needed()
    box = chart.locator(".nsewdrag").first.bounding_box()
    assert box["width"] / classes >= MIN_SQUARE_PX, f"squares {box['width'] / classes:.0f} px wide"
    _fits_the_page(page, chart)


# Each legend entry's text and its line's colour, as the browser draws them.
_ENTRIES = """() => Array.from(document.querySelectorAll('[data-testid=stPlotlyChart] .legend .traces')).map(t => {
    const line = t.querySelector('.legendlines path');
    return [t.textContent, line ? getComputedStyle(line).stroke : null];
})"""


def _which(text: str) -> str:
    """Which of the fixture's three runs a legend entry or a table row speaks of."""
    return "0.001" if "0.001" in text else "0.003" if "0.003" in text else "fine-tune"


def _eventually(check, *args, seconds: float = 30, **kwargs) -> None:
    """`check` passes within `seconds` (a page drawn again for a new width takes a rerun)."""
    end = time.monotonic() + seconds
    while True:
        try:
            return check(*args, **kwargs)
        except AssertionError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def _legend_names_tell_apart(page) -> dict[str, tuple[int, int, int]]:
    """No legend entry starts with when its run started (the three started in the same minute or two): the
    linear probes' say their settings, the fine-tune's its strategy. Returns each run's line colour (RGB)."""
    entries = page.evaluate(_ENTRIES)
    assert entries and not any(re.match(r"\d\d?:\d\d", text) for text, _ in entries), entries
    assert not any("started" in text for text, _ in entries), entries
    assert sum("learning" in text and "rate" in text for text, _ in entries) == 2 * 2, entries  # two charts
    colours = {_which(text): tuple(int(v) for v in re.findall(r"\d+", stroke)[:3]) for text, stroke in entries}
    assert len(colours) == 3 and len(set(colours.values())) == 3, entries
    return colours


# Each "Runs to compare" chip's text and the part of it the chip shows: its characters up to the last one
# that ends left of the chip's edge, less the "…" drawn there.
_CHIPS = """() => Array.from(document.querySelectorAll('[data-testid=stMultiSelect] span[title]')).map(chip => {
    const text = chip.firstChild, right = chip.getBoundingClientRect().right - 12, range = document.createRange();
    let shown = 0;
    for (let i = 1; i <= text.length; i++) {
        range.setStart(text, 0); range.setEnd(text, i);
        if (range.getBoundingClientRect().right > right) break;
        shown = i;
    }
    return [chip.textContent, chip.textContent.slice(0, shown)];
})"""


def _chips_tell_apart(page) -> None:
    """Each "Runs to compare" chip shows, before it is cut, what tells its run apart: its legend entry
    (network, what learned, the settings that differ), and those shown parts differ (the labels began with
    the date and time, and a 1024 px window cut them before the settings)."""
    legends = {text.replace(" ", "") for text, _ in page.evaluate(_ENTRIES)}  # a legend's line breaks lose a space
    chips = page.evaluate(_CHIPS)
    assert len(chips) == 3, chips
    for text, shown in chips:
        assert any(shown.replace(" ", "").startswith(legend) for legend in legends), (shown, text, legends)
    assert len({_which(shown) for _, shown in chips}) == 3, chips


def _marks_in_line_colours(table, colours: dict[str, tuple[int, int, int]]) -> None:
    """The leaderboard's first column ("Line") shows, down its rows, each run's line colour in the charts."""
    from PIL import Image

    rows = [_which(" ".join(row.locator("td").all_text_contents())) for row in table.locator("tbody tr").all()]
    assert sorted(rows) == sorted(colours), rows
    shot = Image.open(io.BytesIO(table.screenshot())).convert("RGB")
    strip = shot.crop((0, 0, 44, shot.height))  # the Line column, the first

    def first_y(rgb) -> float:
        near = [
            y
            for y in range(strip.height)
            for x in range(strip.width)
            if sum(abs(a - b) for a, b in zip(strip.getpixel((x, y)), rgb)) < 40
        ]
        assert near, f"no mark in {rgb} in the table's Line column"
        return sum(near) / len(near)

    shown = sorted(rows, key=lambda run: first_y(colours[run]))
    assert shown == rows, f"marks top to bottom {shown}, rows {rows}"


def _class_names_whole(table, rows: int, narrow: bool) -> None:
    """The per-class table's rows are two lines tall where the page is narrow (the long class name wraps there,
    whole, rather than cut at the column's edge), one line where it is wide."""
    row = (table.bounding_box()["height"] - 35) / rows
    assert (row >= 2 * 19 + 10) if narrow else (row < 2 * 19), f"rows {row:.0f} px tall"


_CUT = """e => { for (let n = e; n && !n.matches('[data-testid=stColumn], [data-testid=stVerticalBlock]');
                  n = n.parentElement) if (n.scrollWidth > n.clientWidth + 1) return true;
                return false; }"""
MIN_PICTURE_PX = 120  # a picture in a gallery: its caption on a few lines, not six


def _hardest_pictures_readable(page) -> None:
    """The toggles' names show whole, and each gallery picture (the chosen square's, the hardest pictures) is
    at least MIN_PICTURE_PX wide."""
    for name in ("Only the mistakes", "Where did it look?"):
        for label in page.get_by_text(name, exact=True).all():
            assert not label.evaluate(_CUT), f"{name!r} is cut"
    widths = page.evaluate(
        "() => Array.from(document.querySelectorAll('[data-testid=stMain] [data-testid=stImage] img'))"
        ".map(i => i.getBoundingClientRect().width).filter(w => w > 0)"
    )
    assert len(widths) >= 12 and min(widths) >= MIN_PICTURE_PX, widths


def test_compare_and_results_with_ten_classes_at_1280_and_1024_px(ten_class_server):
    from playwright.sync_api import expect

    with browser_page(1280, 900, timeout_ms=60_000) as page:
        page.goto(ten_class_server["url"])
        _nav(page, "Compare")
        table = page.get_by_test_id("stDataFrame").first
        expect(table).to_contain_text("3 epochs, learning rate: 0.003", timeout=120_000)
        expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2)
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            if width < 1280:  # the page has heard of its new width and been drawn again for it
                expect(page.get_by_text("The window is narrow, so the table leaves out")).to_be_visible()
            page.wait_for_timeout(1000)  # the charts' own redraw
            _legends_fit(page, runs=3)
            _marks_in_line_colours(table, _legend_names_tell_apart(page))
            _chips_tell_apart(page)
            _fits_the_page(page, table)
            _no_sideways_scroll(table)
            _no_error_boxes(page)
            _shot(page, f"10-compare-3-runs-{width}.png")
        # Two runs, in the narrow window: the fine-tune taken out of the comparison.
        page.get_by_role("button", name=re.compile(r"^Remove .*last-2")).click()
        expect(page.get_by_test_id("stPlotlyChart").first.locator(".legend .traces")).to_have_count(2)
        _legends_fit(page, runs=2)
        _shot(page, "10-compare-2-runs-1024.png")

        _nav(page, "Results")
        expect(page.get_by_text("How well each class is recognised")).to_be_visible(timeout=60_000)
        classes = page.get_by_test_id("stDataFrame").first
        expect(classes).to_contain_text("t-shirt")
        for width, height in reversed(SIZES):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(1000)
            _squares_readable(page, 10)
            _fits_the_page(page, classes)
            _no_sideways_scroll(classes)
            _eventually(_class_names_whole, classes, 10, narrow=width < 1280)  # once drawn for the new width
            _hardest_pictures_readable(page)
            classes.screenshot(path=str(ARTIFACTS / f"10-results-classes-{width}.png"))  # the page is taller
            _no_error_boxes(page)
            _shot(page, f"10-results-{width}.png")
