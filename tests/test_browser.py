"""End to end: the real server, driven in Debian's Chromium the way a person would.

Starts `streamlit run app.py` on a free port, types the sample data folder,
picks an offline pretrained backbone and a 2-epoch linear probe, trains while
watching the charts fill, predicts one validation picture in the Playground,
opens the Results (clicks a square of the confusion matrix in the plotly chart,
sees its pictures, switches on Grad-CAM, exports the model and downloads the
zip), looks at Runs and Compare, and saves a screenshot of each page in
test-artifacts/ (look at them).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.folders import PACKAGED_BACKBONE, PHOTO_CLASSES
from tests.serving import CHROMIUM, CHROMIUM_ARGS, choose, needs_browser, streamlit_server

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.browser


def _env(folder: Path) -> dict:
    return {
        "TORCH_HOME": str(folder / "torch-home"),  # empty: only EfficientNet-Lite0's packaged weights
        "TRANSFER_STUDIO_RUNS": str(folder / "runs"),
        "TRANSFER_STUDIO_CACHE": str(folder / "cache"),
        "TRANSFER_STUDIO_DATA": str(folder / "data"),
    }


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """One server for this file's tests (each start costs a new process that loads torch):
    {"url": ..., "fresh": no page asked of it yet, "folder": where its runs/ and data/ are}."""
    needs_browser()
    folder = tmp_path_factory.mktemp("browser")
    with streamlit_server(folder, env=_env(folder)) as (url, _port, _log):
        yield {"url": url, "fresh": True, "folder": folder}


@pytest.fixture()
def server(app_server):
    app_server["fresh"] = False
    return app_server["url"]


@pytest.fixture()
def fresh_server(app_server, tmp_path):
    """A server that has served no page yet: the shared one while no test has
    used it (this file's first test), else a new one of its own."""
    if app_server["fresh"]:
        app_server["fresh"] = False
        yield app_server["url"]
        return
    with streamlit_server(tmp_path, env=_env(tmp_path)) as (url, _port, _log):
        yield url


def _shot(page, name: str) -> None:
    """A screenshot of the whole page. Streamlit scrolls inside its main area,
    so the window is made as tall as the content first."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(500)  # let charts and images settle
    size = page.viewport_size
    height = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll('[data-testid=stMain], section.main, "
        "[data-testid=stAppViewContainer]')).map(e => e.scrollHeight), document.body.scrollHeight)"
    )
    page.set_viewport_size({"width": size["width"], "height": min(max(int(height), size["height"]), 5000)})
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    page.set_viewport_size(size)


@contextlib.contextmanager
def browser_page(
    width: int, height: int, timeout_ms: int | None = None, extra_args: tuple | list = (), shot_on_failure: bool = True
):
    """A page of Debian's Chromium (CHROMIUM_ARGS, plus `extra_args`) in a
    window `width` x `height` px; on a failure a screenshot of the page goes
    to test-artifacts/failure.png (look at it), and the browser closes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + list(extra_args))
        page = browser.new_page(viewport={"width": width, "height": height})
        if timeout_ms is not None:
            page.set_default_timeout(timeout_ms)
        try:
            yield page
        except Exception:
            if shot_on_failure:
                _shot(page, "failure.png")
            raise
        finally:
            browser.close()


def _nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()


def _no_error_boxes(page) -> None:
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.all_inner_texts()
    assert page.locator('[data-testid="stException"]').count() == 0


def _click_confusion_square(page, row: int, col: int, n: int) -> None:
    """Click the square (real class `row`, predicted `col`) of an n x n
    confusion-matrix heatmap, where a person would: on its centre."""
    chart = page.locator('[data-testid="stPlotlyChart"]').filter(has=page.locator(".heatmaplayer")).first
    area = chart.locator(".nsewdrag").first
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    x, y = box["x"] + box["width"] * (col + 0.5) / n, box["y"] + box["height"] * (row + 0.5) / n
    page.mouse.move(x, y)  # plotly picks the point under the pointer on hover, then clicks it
    page.wait_for_timeout(300)
    page.mouse.click(x, y)


def test_a_bookmarked_page_opens_inside_the_app_on_a_fresh_server(fresh_server):
    """The very first request to a new server is a page's address: Streamlit
    would run that script alone, as an old-style pages-folder app (a sidebar of
    file names, "common" among them); the page hands itself over to app.py."""
    from playwright.sync_api import expect

    with browser_page(1400, 900, shot_on_failure=False) as page:
        page.goto(fresh_server + "/results")
        expect(page.get_by_text("There is no trained model yet.")).to_be_visible(timeout=90_000)
        nav = page.locator('[data-testid="stSidebarNav"]')
        expect(nav.get_by_text("Results", exact=True)).to_be_visible()
        expect(page.get_by_text("YOUR CHOICES")).to_be_visible()  # app.py's sidebar ran
        assert nav.get_by_text("common", exact=True).count() == 0
        assert nav.get_by_text("app", exact=True).count() == 0
        assert page.url.rstrip("/").endswith("/results")
        _no_error_boxes(page)
        _shot(page, "0-bookmarked-results.png")

        # /data, the default page's own name (the root address serves it): opened, not "Page not found".
        page.goto(fresh_server + "/data")
        expect(page.get_by_text("Step 1 of 4.")).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1000)  # the dialog would come with the first answer
        assert page.get_by_text("Page not found").count() == 0
        assert page.url.rstrip("/") == fresh_server.rstrip("/")


def test_a_teacher_trains_and_predicts_in_the_browser(server, small_data, tmp_path):
    from playwright.sync_api import expect

    val_shoe = sorted((small_data / "val" / "shoes").glob("*.jpg"))[0]
    with browser_page(1400, 900, timeout_ms=30_000) as page:
        # 1. Data: type the folder, press Enter, read the report.
        page.goto(server)
        expect(page.get_by_text("Your pictures").first).to_be_visible(timeout=60_000)
        # The project's config hides the developer toolbar: no "Deploy" button, not even briefly.
        expect(page.get_by_role("button", name="Deploy")).to_have_count(0)
        assert page.get_by_text("Deploy", exact=True).count() == 0
        box = page.get_by_role("textbox", name="Folder with your pictures")
        box.fill(str(small_data))
        box.press("Enter")
        expect(page.get_by_text("Ready to train:")).to_be_visible(timeout=90_000)
        expect(page.get_by_test_id("stPlotlyChart").get_by_text("Pictures per class")).to_be_visible(
            timeout=30_000
        )  # plotly draws late on a busy machine
        expect(page.locator('[data-testid="stImage"]').first).to_be_visible()
        _no_error_boxes(page)
        _shot(page, "1-data.png")

        # 2. Model: an offline pretrained backbone, linear probe, 2 epochs.
        _nav(page, "Model")
        expect(page.get_by_text("Network to start from")).to_be_visible()
        choose(page, "Network to start from", "EfficientNet-Lite0 · fast · Ready — works offline")
        page.get_by_text("Only the new last layer learns", exact=True).click()
        epochs = page.get_by_role("spinbutton", name="Epochs")
        epochs.fill("2")
        epochs.press("Enter")
        expect(page.get_by_text("2 epochs", exact=False).first).to_be_visible()
        expect(page.get_by_test_id("stMetricValue").first).to_have_text("5,124")  # 1280 x 4 classes + 4
        _no_error_boxes(page)
        _shot(page, "2-model.png")

        # 3. Train: start, watch the charts fill, see it finish.
        _nav(page, "Train")
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_text("Training now")).to_be_visible()
        expect(page.get_by_text("Running on")).to_be_visible()
        # The progress moves: some of the pictures have gone through the frozen blocks (56 small
        # pictures can go through before the page looks, so having finished counts too).
        progressed = re.compile(r"Computing features.*\([1-9]\d* of \d+ pictures\)|Training…|Finished\.")
        expect(page.get_by_text(progressed).first).to_be_visible(timeout=90_000)
        _shot(page, "3-train-running.png")
        expect(page.get_by_text("Finished.")).to_be_visible(timeout=240_000)
        # Both epochs are on the accuracy chart: train and validation, two points each.
        acc_chart = page.locator(".js-plotly-plot").nth(1)
        expect(acc_chart.locator(".scatterlayer .trace").first.locator(".points path")).to_have_count(2)
        expect(page.get_by_role("link", name="See the results")).to_be_visible()
        _no_error_boxes(page)
        _shot(page, "3-train.png")

        # 4. Playground: upload one validation picture of shoes.
        _nav(page, "Playground")
        page.locator('input[type="file"]').first.set_input_files(str(val_shoe))
        expect(page.get_by_text("It looks like:")).to_be_visible(timeout=60_000)
        expect(page.locator("h3").filter(has_text="It looks like:")).to_contain_text("shoes")
        _no_error_boxes(page)
        _shot(page, "4-playground.png")

        # 5. Results: click a square of the confusion matrix, see its pictures, and where the model looked.
        _nav(page, "Results")
        expect(page.get_by_text("Which classes get mixed up")).to_be_visible(timeout=60_000)
        expect(page.get_by_text(re.compile(r"It named \d+ of the 16 validation pictures correctly"))).to_be_visible()
        page.wait_for_timeout(500)  # let plotly draw and wire up its events
        _click_confusion_square(page, row=2, col=2, n=4)  # real shoes, said shoes
        expect(page.get_by_text(re.compile(r"\d+ pictures of shoes the model got right"))).to_be_visible(timeout=30_000)
        cell_images = page.get_by_alt_text(re.compile(r"^Picture of shoes; the model said shoes"))
        expect(cell_images.first).to_be_visible()
        expect(page.get_by_text(re.compile(r"shoes · \d+% sure")).first).to_be_visible()
        assert not page.get_by_alt_text(re.compile(r"^Where the model looked")).count()
        page.get_by_text("Where did it look?").first.click()
        expect(page.get_by_text("red and yellow are the parts of the picture").first).to_be_visible(timeout=60_000)
        # The square's pictures are now Grad-CAM overlays on what the model saw (224 x 224 pixels).
        overlays = page.get_by_alt_text(
            re.compile(r"^Where the model looked in a picture of shoes; the model said shoes")
        )
        expect(overlays.first).to_be_visible(timeout=60_000)
        expect(page.get_by_text(re.compile(r"\d+ pictures of shoes the model got right"))).to_be_visible()
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('img[alt^=\"Where the model looked\"]'))"
            ".some(i => i.complete && i.naturalWidth === 224)",
            timeout=30_000,
        )
        _no_error_boxes(page)

        # Export the model and download the zip.
        page.get_by_role("button", name="Export").click()
        download_button = page.get_by_role("button", name=re.compile(r"Download .*\.zip"))
        expect(download_button).to_be_visible(timeout=180_000)
        with page.expect_download(timeout=60_000) as download_info:
            download_button.click()
        saved = tmp_path / download_info.value.suggested_filename
        download_info.value.save_as(saved)
        with zipfile.ZipFile(saved) as zf:
            names = {Path(n).name for n in zf.namelist()}
            assert {"model.onnx", "model.ts", "MODEL_CARD.md"} <= names, names
            card = next(zf.read(n).decode() for n in zf.namelist() if n.endswith("MODEL_CARD.md"))
        assert "shoes" in card and "hat" in card
        _no_error_boxes(page)
        _shot(page, "6-results.png")

        # 6. Runs: the run is listed as finished.
        _nav(page, "Runs")
        expect(page.get_by_text("Open a run")).to_be_visible()
        expect(page.get_by_text("How well each class is recognised")).to_be_visible()
        _no_error_boxes(page)
        _shot(page, "5-runs.png")

        # 7. Compare: the run is on the leaderboard, with its speed measured here.
        _nav(page, "Compare")
        expect(page.get_by_text("Trained models side by side", exact=True)).to_be_visible()
        expect(page.get_by_text("Compare networks on your pictures")).to_be_visible()
        expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Accuracy (higher is better)")).to_be_visible()
        _no_error_boxes(page)
        _shot(page, "7-compare.png")


def _fits_the_page(page, locator) -> None:
    """`locator` ends inside the page's main column (its right edge at most the column's)."""
    main = page.get_by_test_id("stMainBlockContainer").bounding_box()
    box = locator.bounding_box()
    assert box["x"] + box["width"] <= main["x"] + main["width"] + 1, (box, main)


def _no_sideways_scroll(table) -> None:
    """Glide's scroller inside a table: wider content would scroll sideways, its last columns out of sight."""
    scroll, shown = table.locator(".dvn-scroller").evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert scroll <= shown + 1, f"the table's columns are {scroll} px wide in {shown} px"


def _two_runs_in_the_server(app_server, linear_probe_run, trained_run, small_data, suffix: str) -> list[Path]:
    """The session's linear probe and a second one at another rate, copied into the shared server's runs
    folder (the caller removes them): two runs of one network and strategy, told apart by their settings."""
    app_server["fresh"] = False
    faster = trained_run(
        small_data, backbone=PACKAGED_BACKBONE, strategy="linear", epochs=1, lr=0.01, device="cpu", seed=0
    )
    runs = [Path(app_server["folder"]) / "runs" / f"{r.name}-{suffix}" for r in (linear_probe_run, faster)]
    for made, copy in zip((linear_probe_run, faster), runs):
        shutil.copytree(made, copy)
    return runs


def test_pictures_and_tables_fit_a_1280_px_window(app_server, small_data, linear_probe_run, trained_run, tmp_path):
    """In a 1280 px window: the Data page's six pictures of each class are one row (a list of images
    wrapped as five, then one alone); the Playground's table of a folder's results (at 1024 px too) and
    its warning of unreadable files with long names stay inside the page; so does the Runs table, with
    two runs told apart by their settings in tall rows."""
    from playwright.sync_api import expect

    runs = _two_runs_in_the_server(app_server, linear_probe_run, trained_run, small_data, "layout")
    folder = tmp_path / "photos-from-the-school-trip-to-the-botanical-garden"
    shutil.copytree(small_data / "val", folder)
    for i in range(5):  # five files that are not pictures, with long names
        (
            folder / "hat" / f"notes_about_hat_number_{i}_written_during_the_lesson_and_saved_as_a_picture.jpg"
        ).write_text("notes")
    try:
        with browser_page(1280, 900, timeout_ms=30_000) as page:
            page.goto(app_server["url"])
            box = page.get_by_role("textbox", name="Folder with your pictures")
            box.fill(str(small_data))
            box.press("Enter")
            expect(page.get_by_text("Ready to train:")).to_be_visible(timeout=90_000)
            for name in PHOTO_CLASSES:
                expect(page.get_by_alt_text(f"A picture of {name}", exact=True)).to_have_count(6, timeout=30_000)
            page.wait_for_function(  # a picture not yet loaded sits lower, in the middle of its row
                "() => Array.from(document.querySelectorAll('img[alt^=\"A picture of \"]'))"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            for name in PHOTO_CLASSES:
                thumbs = page.get_by_alt_text(f"A picture of {name}", exact=True)
                tops = thumbs.evaluate_all("els => els.map(e => Math.round(e.getBoundingClientRect().top))")
                assert max(tops) - min(tops) <= 1, f"the pictures of {name} are not one row: tops {tops}"
                _fits_the_page(page, thumbs.last)
            _shot(page, "8-data-1280.png")

            _nav(page, "Playground")
            box = page.get_by_role("textbox", name="Folder of pictures")
            box.fill(str(folder))
            box.press("Enter")
            page.get_by_role("button", name="Name them all").click()
            warning = page.get_by_test_id("stAlert").filter(has_text="could not be read as a picture")
            expect(warning).to_contain_text(
                "5 files could not be read as a picture: hat/notes_about_hat_number_0_", timeout=120_000
            )
            expect(warning).to_contain_text("; and 2 more.")
            _fits_the_page(page, warning)
            table = page.get_by_test_id("stDataFrame").first
            expect(table).to_contain_text("It looks like")
            _fits_the_page(page, table)
            _no_sideways_scroll(table)
            expect(table).to_contain_text("Problem")  # the last column, in sight
            _no_error_boxes(page)
            _shot(page, "8-playground-folder-1280.png")
            page.set_viewport_size({"width": 1024, "height": 900})  # a small laptop's window, the sidebar still open
            page.wait_for_timeout(1000)
            _fits_the_page(page, table)
            _no_sideways_scroll(table)
            _shot(page, "8-playground-folder-1024.png")
            page.set_viewport_size({"width": 1280, "height": 900})

            _nav(page, "Runs")
            table = page.get_by_test_id("stDataFrame").first
            expect(table).to_contain_text("1 epoch, learning rate: 0.01", timeout=60_000)
            _fits_the_page(page, table)
            _no_sideways_scroll(table)
            _no_error_boxes(page)
            _shot(page, "8-runs-1280.png")
    finally:
        for copy in runs:
            shutil.rmtree(copy)


def test_runs_and_compare_tables_fit_1280_and_1024_px_windows(app_server, small_data, linear_probe_run, trained_run):
    """Compare's leaderboard of runs on two folders (its "Pictures" column shown) fits a 1280 px window with
    the sidebar open. In a 1024 px one (562 px of page) the Runs table and the leaderboard keep the columns a
    person picks a run by, leave out the others, say which, and do not scroll sideways; wider again, every
    column is back."""
    from playwright.sync_api import expect

    runs = _two_runs_in_the_server(app_server, linear_probe_run, trained_run, small_data, "narrow")
    config = json.loads((runs[1] / "config.json").read_text())  # the newer one learned from another folder
    (runs[1] / "config.json").write_text(json.dumps({**config, "data_dir": str(small_data.parent / "garden-bugs")}))
    try:
        with browser_page(1280, 900, timeout_ms=60_000) as page:
            page.goto(app_server["url"])
            _nav(page, "Compare")
            picker = page.get_by_test_id("stMultiSelect").filter(has_text="Runs to compare")
            expect(picker).to_contain_text("garden-bugs", timeout=60_000)
            picker.locator("input").fill("clothes")  # the run on the other folder too
            page.get_by_role("option").filter(has_text="clothes").first.click()
            page.keyboard.press("Escape")
            table = page.get_by_test_id("stDataFrame").first
            expect(table).to_contain_text("garden-bugs", timeout=60_000)  # a speed is timed first
            expect(table).to_contain_text("Pictures")
            expect(table).to_contain_text("Started")
            _fits_the_page(page, table)
            _no_sideways_scroll(table)
            _shot(page, "9-compare-pictures-1280.png")

            page.set_viewport_size({"width": 1024, "height": 900})  # a small laptop's window, the sidebar open
            left_out = page.get_by_text("The window is narrow, so the table leaves out")
            expect(left_out).to_contain_text("Training, Speed and Started", timeout=30_000)
            expect(table).not_to_contain_text("Started")
            for needed in ("Network", "What learned", "Pictures", "Accuracy"):
                expect(table).to_contain_text(needed)
            _fits_the_page(page, table)
            _no_sideways_scroll(table)
            _no_error_boxes(page)
            _shot(page, "9-compare-1024.png")

            _nav(page, "Runs")
            expect(page.get_by_text("The window is narrow, so the table leaves out")).to_contain_text(
                "Started and Time"
            )
            table = page.get_by_test_id("stDataFrame").first
            for needed in ("Network", "What learned", "Pictures", "Accuracy", "Status"):
                expect(table).to_contain_text(needed)
            _fits_the_page(page, table)
            _no_sideways_scroll(table)
            _shot(page, "9-runs-1024.png")

            page.set_viewport_size({"width": 1280, "height": 900})
            expect(table).to_contain_text("Started", timeout=30_000)
            expect(page.get_by_text("The window is narrow")).to_have_count(0)
            _no_sideways_scroll(table)
    finally:
        for copy in runs:
            shutil.rmtree(copy)
