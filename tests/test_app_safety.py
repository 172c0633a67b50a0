"""Safe by default (issue 10), the app's side: the places where the app writes
are fixed when the server starts; uploads write only pictures, into a new
folder, never over anything, and leave nothing behind when refused; Delete
removes only a run this app made, inside the runs folder, and never one that
trains; a server shared on the network shows no folder outside its data
folder; and every name a user made is shown as text, never as markup.

The page logic goes through Streamlit's AppTest on real photos; what the
server itself does (its command-line options, what the browser renders) goes
through the real server and Debian's Chromium.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.serving import CHROMIUM, CHROMIUM_ARGS, choose, needs_browser, streamlit_server

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
DATA, PLAYGROUND, RUNS = "pages/1_data.py", "pages/4_playground.py", "pages/5_runs.py"
LINK_NAME, BOLD_NAME = "[click](x)", "<b>bold"
RENAMED = {"hat": LINK_NAME, "pants": BOLD_NAME}  # two of the test photos' classes, renamed


@pytest.fixture(autouse=True)
def every_run_goes_through_app_py(monkeypatch):
    """As in test_app_pages: every rerun executes app.py, whose st.navigation picks the page."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if "Something went wrong" in e.value]
    return at


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    _ok(at)
    if page:
        at.switch_page(page).run()
        _ok(at)
    return at


def _button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return found[0]


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _everything(at: AppTest) -> str:
    return "\n".join(
        _texts(getattr(at, kind))
        for kind in ("markdown", "caption", "success", "error", "warning", "info", "subheader")
    )


def _jpegs(small_data: Path, name: str, n: int = 3) -> list[Path]:
    return sorted((small_data / "train" / name).glob("*.jpg"))[:n]


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _upload_zip(at: AppTest, data: bytes, folder: str | None = None) -> AppTest:
    if folder is not None:
        at.text_input(key="upload_folder").set_value(folder).run()
    at.radio(key="upload_kind").set_value("A zip file with one folder per class").run()
    nonce = at.session_state["upload_nonce"]
    at.file_uploader(key=f"zip_{nonce}").upload("pictures.zip", data, "application/zip").run()
    _button(at, "Unpack and use this folder").click().run()
    return _ok(at)


def _files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


# --- 1. the places are fixed when the server starts --------------------------------------


def test_the_browser_cannot_change_where_the_app_writes(env):
    at = _app()
    boxes = {t.label: t for t in at.sidebar.text_input}
    assert boxes["Runs folder"].value == str((env / "runs").resolve())
    assert boxes["Folder for uploaded pictures"].value == str((env / "data").resolve())
    assert boxes["Runs folder"].disabled and boxes["Folder for uploaded pictures"].disabled
    # Nothing a session holds moves them: the old widget keys mean nothing now.
    at.session_state["runs_dir"] = "/"
    at.session_state["data_root"] = str(Path.home() / ".config" / "autostart")
    at.run()
    from ui import state

    assert state.runs_dir() == (env / "runs").resolve() and state.data_root() == (env / "data").resolve()
    assert {t.value for t in at.sidebar.text_input} == {str((env / "runs").resolve()), str((env / "data").resolve())}


# --- 2. uploads ---------------------------------------------------------------------------


def test_a_zip_writes_only_pictures_into_a_new_folder_and_never_merges(env, small_data):
    hat_photo, pants_photo = _jpegs(small_data, "hat", 1)[0], _jpegs(small_data, "pants", 1)[0]
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (40, 30), "red").save(png, format="PNG")
    first = _zip(
        {
            "ants/1.jpg": hat_photo.read_bytes(),
            "bees/1.jpg": pants_photo.read_bytes(),
            "bees/notes.jpg": b"#!/bin/sh\nrm -rf ~\n",  # a script named like a picture
            "bees/run.desktop": b"[Desktop Entry]\nExec=evil\n",
            "bees/red.txt": png.getvalue(),
        }
    )  # a picture named like text: kept, as .png
    at = _upload_zip(_app(), first)
    folder = env / "data" / "my-pictures"
    assert _files_under(folder) == {"ants/1.jpg", "bees/1.jpg", "bees/red.txt.png"}
    assert "Left out 2 files that are not pictures" in _texts(at.success)

    # The same default name again: a new folder, said so; the first is untouched.
    second = _zip({"ants/1.jpg": pants_photo.read_bytes(), "bees/2.jpg": hat_photo.read_bytes()})
    at = _upload_zip(_app(), second)
    assert (folder / "ants" / "1.jpg").read_bytes() == hat_photo.read_bytes()
    assert _files_under(env / "data" / "my-pictures-2") == {"ants/1.jpg", "bees/2.jpg"}
    assert "already there, so this is a new folder, my-pictures-2" in _texts(at.success)
    assert sorted(p.name for p in (env / "data").iterdir()) == ["my-pictures", "my-pictures-2"]


def test_a_zip_that_unpacks_too_much_or_breaks_half_way_leaves_nothing(env, small_data, tmp_path):
    data = env / "data"
    hat_photo = _jpegs(small_data, "hat", 1)[0].read_bytes()
    big = tmp_path / "big.zip"  # 2 GB and a bit of zeros: a few MB once compressed
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("ants/1.jpg", hat_photo)
        with zf.open("bees/huge.jpg", "w", force_zip64=True) as out:
            block = bytes(1 << 24)
            for _ in range(2 * 2**30 // len(block) + 1):
                out.write(block)
    at = _upload_zip(_app(), big.read_bytes(), folder="huge")
    assert "unpacks to 2.0 GB, more than 2 GB" in _texts(at.error)
    assert not data.exists() or list(data.iterdir()) == []

    # A damaged member after good ones: refused whole, nothing left behind.
    raw = bytearray(_zip({"ants/1.jpg": hat_photo, "ants/2.jpg": hat_photo, "bees/3.jpg": hat_photo}))
    last = raw.rfind(hat_photo[200:260])  # inside the last member's stored bytes
    raw[last : last + 20] = bytes(20)
    at = _upload_zip(_app(), bytes(raw), folder="broken")
    assert "damaged" in _texts(at.error)
    assert list(data.iterdir()) == []  # no half folder, no hidden temporary folder


def test_pictures_of_one_class_are_checked_by_content_and_never_overwrite(env, small_data):
    at = _app()
    at.radio(key="upload_kind").set_value("Pictures of one class").run()
    at.text_input(key="upload_class").set_value("hat").run()
    hat_photo = _jpegs(small_data, "hat", 1)[0]
    files = [("1.jpg", hat_photo.read_bytes(), "image/jpeg"), ("evil.jpg", b"<html>not a picture</html>", "image/jpeg")]
    at.file_uploader(key="images_0").set_value(files).run()
    _button(at, "Add these pictures").click().run()
    _ok(at)
    folder = env / "data" / "my-pictures"
    assert _files_under(folder) == {"hat/1.jpg"}
    assert "Left out 1 file that is not a picture: evil.jpg" in _texts(at.success)
    # The same name again in the same class of this session's folder: a second file, not an overwrite.
    pants_photo = _jpegs(small_data, "pants", 1)[0]
    at.file_uploader(key="images_1").set_value([("1.jpg", pants_photo.read_bytes(), "image/jpeg")]).run()
    _button(at, "Add these pictures").click().run()
    _ok(at)
    assert _files_under(folder) == {"hat/1.jpg", "hat/1-2.jpg"}
    assert (folder / "hat" / "1.jpg").read_bytes() == hat_photo.read_bytes()
    # Only files that are not pictures: refused, nothing written.
    at.file_uploader(key="images_2").set_value([("x.png", b"just text", "image/png")]).run()
    _button(at, "Add these pictures").click().run()
    assert "None of these files is a picture" in _texts(at.error)
    assert sorted(p.name for p in (env / "data").iterdir()) == ["my-pictures"]

    # Another session (a reload) with the same name: on this machine it adds the next class to the
    # folder that has one class so far, says so first, and still overwrites nothing.
    other = _app()
    other.radio(key="upload_kind").set_value("Pictures of one class").run()
    assert "my-pictures, the folder you started before" in _texts(other.caption)
    other.text_input(key="upload_class").set_value("pants").run()
    other.file_uploader(key="images_0").set_value([("1.jpg", pants_photo.read_bytes(), "image/jpeg")]).run()
    _button(other, "Add these pictures").click().run()
    _ok(other)
    assert _files_under(folder) == {"hat/1.jpg", "hat/1-2.jpg", "pants/1.jpg"}
    # That session's next class joins the same folder: a teacher adds classes one after another.
    assert "my-pictures, the folder you started before" in _texts(other.caption)
    other.text_input(key="upload_class").set_value("shoes").run()
    other.file_uploader(key="images_1").set_value([("1.jpg", hat_photo.read_bytes(), "image/jpeg")]).run()
    _button(other, "Add these pictures").click().run()
    _ok(other)
    assert _files_under(folder) == {"hat/1.jpg", "hat/1-2.jpg", "pants/1.jpg", "shoes/1.jpg"}
    assert "was already there" not in _texts(other.success)
    # The next lesson (a new session): the same name still adds to that folder, and says so first.
    third = _app()
    third.radio(key="upload_kind").set_value("Pictures of one class").run()
    assert "my-pictures, the folder you started before" in _texts(third.caption)
    third.text_input(key="upload_class").set_value("socks").run()
    third.file_uploader(key="images_0").set_value([("1.jpg", hat_photo.read_bytes(), "image/jpeg")]).run()
    _button(third, "Add these pictures").click().run()
    _ok(third)
    assert "socks/1.jpg" in _files_under(folder)
    # Another name makes a new folder, whose one class is a class still to come, not an error.
    third.text_input(key="upload_folder").set_value("lesson two").run()
    assert "the folder you started before" not in _texts(third.caption)
    third.text_input(key="upload_class").set_value("cups").run()
    third.file_uploader(key="images_1").set_value([("1.jpg", hat_photo.read_bytes(), "image/jpeg")]).run()
    _button(third, "Add these pictures").click().run()
    assert not third.exception
    assert _files_under(env / "data" / "lesson two") == {"cups/1.jpg"}
    assert "has one class so far, cups" in _texts(third.info)
    assert "(1 class so far)" in _texts(third.markdown) and "needs fixing" not in _texts(third.markdown)  # sidebar
    assert "Only one class" not in _texts(third.error)  # only what is still wrong: 1 picture is too few
    assert "Class 'cups' has only 1 usable picture" in _texts(third.error)


# --- 3. delete --------------------------------------------------------------------------------


def test_delete_removes_only_runs_this_app_made_inside_the_runs_folder(env, with_run, tmp_path):
    from core.errors import UserError
    from core.runs import RUN_MARKER, RunStore, open_run

    runs = env / "runs"
    store = RunStore(runs)
    assert (with_run / RUN_MARKER).is_file()  # written when the engine made the folder
    # Another program's folder that happens to hold a config.json.
    foreign = runs / "my-project"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"debug": true}')
    (foreign / "main.py").write_text("print('mine')\n")
    with pytest.raises(UserError, match="not made by Transfer Studio"):
        store.delete(open_run(foreign))
    assert (foreign / "main.py").exists()
    at = _app(RUNS)  # the Runs page does not offer it either
    at.selectbox(key="open_run").set_value("my-project").run()
    _ok(at)
    assert _button(at, "Delete…").disabled
    # A link inside the runs folder to a run elsewhere: not this store's run.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(with_run, elsewhere)
    (runs / "link").symlink_to(elsewhere)
    with pytest.raises(UserError, match="not a run in"):
        store.delete(open_run(runs / "link"))
    assert (elsewhere / "config.json").exists()
    # A run made before the marker existed is still the user's to delete.
    (with_run / RUN_MARKER).unlink()
    store.delete(open_run(with_run))
    assert not with_run.exists()


def test_a_delete_left_open_never_removes_a_run_another_tab_resumed(env, with_run):
    from core.jobs import ACTIVE, get_job_manager

    status = json.loads((with_run / "status.json").read_text())
    status.update(state="stopped", reason="Stopped by you.")
    (with_run / "status.json").write_text(json.dumps(status))
    config = json.loads((with_run / "config.json").read_text())
    config["epochs"] = 30  # long enough to still be training when the other tab answers
    (with_run / "config.json").write_text(json.dumps(config))

    tab_a = _app(RUNS)
    _button(tab_a, "Delete…").click().run()
    assert "cannot be undone" in _texts(tab_a.warning)

    tab_b = _app(RUNS)
    _button(tab_b, "Resume").click().run()
    mgr = get_job_manager(env / "runs")
    job = mgr.job_for_run(with_run)
    try:
        assert job is not None and job.state in ACTIVE
        _button(tab_a, "Yes, delete it").click().run()
        assert "Stop it first" in _texts(tab_a.error)
        assert (with_run / "config.json").exists() and (with_run / "last.pt").exists()
    finally:
        if job is not None:
            job.request_stop()
            job.wait(120)
    assert with_run.exists()


# --- 4. shared on a network ----------------------------------------------------------------


def test_a_shared_app_lists_no_folder_outside_its_data_folder(env, small_data, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_SHARE", "1")
    shutil.copytree(small_data, env / "data" / "insects")
    (env / "runs").mkdir()
    (env / "runs" / ".recent-folders.json").write_text(json.dumps(["/etc", str(small_data)]))
    at = _app()
    assert not [t for t in at.text_input if t.key == "data_dir_input"], "a shared app offers no path box"
    pick = at.selectbox(key="shared_pick")
    assert pick.options == ["insects"]
    pick.set_value(str(env / "data" / "insects")).run()
    _ok(at)
    assert "Ready to train" in _texts(at.success)

    # Even a folder that reached the session some other way is not read.
    at.session_state["data_dir"] = "/etc"
    at.run()
    _ok(at)
    assert "only opens folders inside its data folder" in _texts(at.error)
    assert not at.dataframe and "passwd" not in _everything(at)
    # The recent folders of this machine are not offered either.
    from ui import state

    assert state.recent_folders() == [str(env / "data" / "insects")]


def test_a_shared_playground_names_no_folder_outside_the_data_folder(env, with_run, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_SHARE", "1")
    at = _app(PLAYGROUND)
    at.text_input(key="batch_folder").set_value("/etc").run()
    _button(at, "Name them all").click().run()
    _ok(at)
    assert "only opens folders inside its data folder" in _texts(at.error)
    assert not at.dataframe


# --- 5. names are text ------------------------------------------------------------------------


def _odd_names_folder(small_data: Path, folder: Path) -> Path:
    for odd, real in ((LINK_NAME, "hat"), (BOLD_NAME, "pants")):
        (folder / odd).mkdir(parents=True)
        for f in _jpegs(small_data, real, 6):
            shutil.copy(f, folder / odd / f.name)
    return folder


def test_odd_class_names_stay_text_on_the_data_page(env, small_data):
    folder = _odd_names_folder(small_data, env / "odd")
    at = _app()
    at.text_input(key="data_dir_input").set_value(str(folder)).run()
    _ok(at)
    assert "Ready to train" in _texts(at.success)
    shown = _everything(at)
    assert "\\[click\\](x)" in shown and LINK_NAME not in shown
    assert "\\<b\\>bold" in shown and BOLD_NAME not in shown
    chart = at.get("plotly_chart")[0].proto.spec
    assert "&lt;b&gt;bold" in chart and "<b>bold" not in chart


def test_odd_class_names_stay_text_in_the_playground_and_results(env, with_run, small_data):
    import torch

    # The run as if trained on folders with these names.
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(with_run / name, map_location="cpu", weights_only=False)
        ckpt["classes"] = [RENAMED.get(c, c) for c in ckpt["classes"]]
        torch.save(ckpt, with_run / name)
    classes = json.loads((with_run / "classes.json").read_text())
    (with_run / "classes.json").write_text(json.dumps([RENAMED.get(c, c) for c in classes]))
    for name in ("eval.json", "scan.json"):  # scan.json too: a classes.json unlike its classes is damage
        text = (with_run / name).read_text()
        for old, new in RENAMED.items():
            text = text.replace(json.dumps(old), json.dumps(new))
        (with_run / name).write_text(text)

    at = _app(PLAYGROUND)
    picture = _jpegs(small_data, "hat", 1)[0]
    at.file_uploader(key="play_upload").upload(picture.name, picture.read_bytes(), "image/jpeg").run()
    _ok(at)
    shown = _everything(at)
    assert "It looks like: **\\" in shown  # the top class, escaped
    assert "\\[click\\](x)" in shown and LINK_NAME not in shown and BOLD_NAME not in shown
    specs = "\n".join(c.proto.spec for c in at.get("plotly_chart"))
    assert "&lt;b&gt;bold" in specs and "<b>bold" not in specs

    results = _app("pages/6_results.py")
    shown = _everything(results)
    assert LINK_NAME not in shown and BOLD_NAME not in shown
    specs = "\n".join(c.proto.spec for c in results.get("plotly_chart"))
    assert "&lt;b&gt;bold" in specs and "<b>bold" not in specs


# --- the real server: its command line, and what the browser renders --------------------


@pytest.mark.browser
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Debian's Chromium")
def test_the_command_line_fixes_the_places_and_names_render_as_text(tmp_path, small_data):
    needs_browser()
    from playwright.sync_api import expect, sync_playwright

    runs, data = tmp_path / "my-runs", tmp_path / "my-data"
    folder = _odd_names_folder(small_data, data / "odd")
    args = ("--", "--runs", str(runs), "--data", str(data), "--share")
    with streamlit_server(tmp_path, args=args) as (url, _port, _log), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        expect.set_options(timeout=30_000)
        page.goto(url)
        expect(page.get_by_text("Your pictures").first).to_be_visible(timeout=90_000)
        page.get_by_test_id("stSidebar").get_by_text("Settings", exact=True).click()
        expect(page.get_by_role("textbox", name="Runs folder")).to_have_value(str(runs))
        expect(page.get_by_role("textbox", name="Runs folder")).to_be_disabled()
        expect(page.get_by_role("textbox", name="Folder for uploaded pictures")).to_have_value(str(data))
        # Shared: no path box, only the data folder's folders.
        assert page.get_by_role("textbox", name="Folder with your pictures").count() == 0
        choose(page, "Folder with your pictures", "odd")
        expect(page.get_by_text("Ready to train:")).to_be_visible(timeout=90_000)
        expect(page.get_by_test_id("stPlotlyChart").get_by_text("Pictures per class")).to_be_visible()
        # The names are shown as the characters they are: no link, nothing bold.
        expect(page.get_by_text(LINK_NAME, exact=True).first).to_be_visible()
        assert page.locator('a[href="x"]').count() == 0
        chart = page.locator('[data-testid="stPlotlyChart"]').first
        expect(chart.locator(".xtick text").filter(has_text=BOLD_NAME)).to_have_count(1)
        assert chart.locator(".xtick text b, .xtick text [style*='bold']").count() == 0
        main = page.get_by_test_id("stMain")
        assert main.locator("b", has_text="bold").count() == 0
        browser.close()
    assert (runs / ".recent-folders.json").exists()  # the runs folder given on the command line
    assert json.loads((runs / ".recent-folders.json").read_text()) == [str(folder)]


def test_a_server_open_to_the_network_is_shared_even_unasked(env):
    """Started so that it listens on every interface (e.g. from another folder,
    without the project's config) but without --share: the restrictions hold."""
    from streamlit import config

    previous = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        at = _app()
        assert not [t for t in at.text_input if t.key == "data_dir_input"], "no path box for the network"
        at.session_state["data_dir"] = "/etc"
        at.run()
        assert "only opens folders inside its data folder" in _texts(at.error)
    finally:
        config.set_option("server.address", previous)
