"""Make classes with the camera, in the real app and Chromium's fake camera.

Chromium's `--use-fake-device-for-media-stream` gives the page a camera that
films a moving test pattern, and `--use-fake-ui-for-media-stream` answers its
permission question with yes. A teacher names a class, takes a burst, adds a
second class, holds the button for a second or two, and goes on: the folder on
disk holds the pictures, one subfolder per class, and the Data page shows its
scan. Without the fake camera the page says in words that there is no camera,
and uploads still add pictures to a class. Screenshots in test-artifacts/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from tests.folders import PHOTOS
from tests.serving import needs_browser, streamlit_server
from tests.test_browser import ARTIFACTS, _no_error_boxes, _shot, browser_page

pytestmark = pytest.mark.browser

WAIT = 30_000  # ms: a busy machine may take a while to rerun the page
FAKE_CAMERA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    needs_browser()
    tmp_path = tmp_path_factory.mktemp("camera")
    data = tmp_path / "data"
    env = {
        "TORCH_HOME": str(tmp_path / "torch-home"),
        "TRANSFER_STUDIO_RUNS": str(tmp_path / "runs"),
        "TRANSFER_STUDIO_CACHE": str(tmp_path / "cache"),
        "TRANSFER_STUDIO_DATA": str(data),
    }
    with streamlit_server(tmp_path, env=env) as (url, _port, _log):
        yield url, data


def _open_camera_tab(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.get_by_text("Your pictures").first).to_be_visible(timeout=60_000)
    page.get_by_role("tab", name=re.compile("Make classes with the camera")).click()
    expect(page.get_by_role("textbox", name="Name of the first class")).to_be_visible(timeout=WAIT)


def _start(page, folder: str, first_class: str) -> None:
    page.get_by_role("textbox", name="Name of the new folder").fill(folder)
    page.get_by_role("textbox", name="Name of the first class").fill(first_class)
    page.get_by_role("button", name="Start with this class").click()


def _add_class(page, name: str) -> None:
    page.get_by_role("textbox", name="Name of another class").fill(name)
    page.get_by_role("button", name="Add class").click()


def _pictures(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".jpg")


def test_two_classes_from_the_camera_become_a_folder_the_app_scans(app):
    from playwright.sync_api import expect

    url, data = app
    with browser_page(1300, 900, timeout_ms=30_000, extra_args=FAKE_CAMERA, shot_on_failure=False) as page:
        _open_camera_tab(page, url)
        _start(page, "gestures", "thumbs up")
        expect(page.get_by_text(re.compile(r"^Camera on"))).to_be_visible(timeout=WAIT)

        # One click: a burst of 20 pictures in about four seconds.
        page.get_by_role("button", name="Take 20 pictures").click()
        expect(page.get_by_text("Saved 20 pictures into thumbs up.")).to_be_visible(timeout=WAIT)
        expect(page.get_by_text("Saved. 'thumbs up' has 20 pictures.")).to_be_visible(timeout=WAIT)

        # A second class, recorded by holding the button for about two seconds.
        _add_class(page, "thumbs down")
        expect(page.get_by_role("radio", name="thumbs down")).to_be_checked(timeout=WAIT)
        hold = page.get_by_role("button", name="Hold to record")
        expect(hold).to_be_enabled(timeout=WAIT)
        hold.hover()
        page.mouse.down()
        expect(
            page.get_by_text(re.compile(r"Recording into 'thumbs down'… (1[0-9]|[2-9][0-9]) pictures"))
        ).to_be_visible(timeout=WAIT)
        page.mouse.up()
        expect(page.get_by_text(re.compile(r"Saved \d+ pictures into thumbs down\."))).to_be_visible(timeout=WAIT)

        folder = data / "gestures"
        up, down = _pictures(folder / "thumbs up"), _pictures(folder / "thumbs down")
        assert len(up) == 20 and 10 <= len(down) <= 60, (len(up), len(down))
        assert len({p.read_bytes() for p in up + down}) == len(up) + len(down)  # frames over time, not one frame again
        with Image.open(up[0]) as img:  # the fake camera's frames, as JPEGs of at most 640 pixels
            assert img.format == "JPEG" and max(img.size) <= 640 and min(img.size) >= 100
        expect(page.get_by_role("radio", name="thumbs down")).to_be_checked(timeout=WAIT)  # still recording into it
        expect(page.get_by_text(re.compile(rf"^thumbs down\s+{len(down)} pictures$"))).to_be_visible(timeout=WAIT)
        _no_error_boxes(page)
        _shot(page, "camera-1-classes.png")

        # Go on: the folder is chosen and scanned like any other.
        page.get_by_role("button", name="Use these pictures").click()
        ready = page.get_by_text(re.compile(rf"^Ready to train: 2 classes, {20 + len(down)} pictures"))
        expect(ready).to_be_visible(timeout=60_000)
        expect(page.locator("h3").filter(has_text="gestures")).to_be_visible(timeout=WAIT)
        _no_error_boxes(page)
        _shot(page, "camera-2-scanned.png")


def test_without_a_camera_the_page_says_why_and_uploads_fill_a_class(app):
    from playwright.sync_api import expect

    url, data = app
    photos = sorted((PHOTOS / "train" / "hat").glob("*.jpg"))[:3]
    with browser_page(1300, 900, timeout_ms=30_000, shot_on_failure=False) as page:  # no camera at all
        _open_camera_tab(page, url)
        _start(page, "no camera", "hat")
        warning = page.get_by_text(re.compile(r"No camera was found|not allowed to use the camera"))
        expect(warning).to_be_visible(timeout=WAIT)
        expect(page.get_by_role("button", name="Try the camera again")).to_be_visible(timeout=WAIT)
        page.get_by_role("button", name="Change").click()
        page.locator('[data-testid="stPopoverBody"] input[type="file"]').set_input_files([str(p) for p in photos])
        page.get_by_role("button", name="Add these pictures").click()
        expect(page.get_by_text("Added 3 pictures to hat.")).to_be_visible(timeout=WAIT)
        assert len(_pictures(data / "no camera" / "hat")) == 3
        _shot(page, "camera-3-no-camera.png")
        assert ARTIFACTS.is_dir()
