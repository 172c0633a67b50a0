"""In without a folder: example sets (fetched or unpacked from a copy of the
archive) and standard datasets made into a class-per-folder tree.

Nothing is mocked. "Offline" is a real connection to a closed local port; a
download is a real one from a local HTTP server; every archive is made by the
test in the dataset's own format (CIFAR's pickles, MNIST's gzipped idx files,
STL-10's binary in a .tar.gz) from real pictures or pixel arrays.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import pickle
import socket
import struct
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import cli, downloads, examples, standard_datasets
from core.errors import UserError
from core.scan import scan_folder


def _closed_port_url(name: str) -> str:
    """An address where nothing listens: connecting fails at once, as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def _visible(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


@pytest.fixture(scope="module")
def ants_bees_zip(hymenoptera, tmp_path_factory) -> Path:
    """hymenoptera_data.zip as PyTorch ships it (hymenoptera_data/train|val/ants|bees/),
    with 4 + 2 real photos per class, plus what a zip may wrongly hold."""
    path = tmp_path_factory.mktemp("zips") / "hymenoptera_data.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for split, count in (("train", 4), ("val", 2)):
            for klass in ("ants", "bees"):
                photos = sorted((hymenoptera / split / klass).glob("*.jpg"))[:count]
                for photo in photos:
                    zf.write(photo, f"hymenoptera_data/{split}/{klass}/{photo.name}")
        zf.writestr("hymenoptera_data/README.txt", "not a picture")
        zf.writestr("hymenoptera_data/train/ants/notes.jpg", "a text file named .jpg")
        zf.writestr("../escaped.jpg", (hymenoptera / "train" / "ants").glob("*.jpg").__next__().read_bytes())
        zf.writestr("__MACOSX/hymenoptera_data/._x.jpg", "resource fork")
    return path


# --- example sets ------------------------------------------------------------------


def test_offline_fetch_says_so_at_once_and_points_to_the_camera_and_the_zip(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(downloads.OfflineError) as caught:
        examples.fetch("ants-bees", root, url=_closed_port_url("hymenoptera_data.zip"), connect_timeout=2)
    message = str(caught.value)
    assert "no internet" in message
    assert "camera" in message
    assert str(root / "hymenoptera_data.zip") in message and "unpack" in message
    assert _visible(root) == []  # nothing half-made


def test_unpacking_a_local_copy_of_the_archive_keeps_only_the_pictures(ants_bees_zip, tmp_path):
    root = tmp_path / "data"
    folder = examples.unpack_archive(ants_bees_zip, root)
    assert folder == root / "ants-and-bees"
    assert sorted(p.name for p in folder.iterdir()) == ["train", "val"]  # the wrapping folder is gone
    assert not (tmp_path / "escaped.jpg").exists() and not (root / "escaped.jpg").exists()
    assert not list(folder.rglob("notes.jpg")) and not list(folder.rglob("README*"))
    report = scan_folder(str(folder))
    assert report.classes == ["ants", "bees"] and report.split_source == "folders"
    assert (len(report.train), len(report.val)) == (8, 4)
    # A second copy never goes over the first.
    assert examples.unpack_archive(ants_bees_zip, root) == root / "ants-and-bees-2"


def test_an_archive_whose_checksum_differs_is_refused(ants_bees_zip, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(downloads.ChecksumError, match="not the expected file"):
        examples.unpack_archive(ants_bees_zip, root, sha256="0" * 64)
    assert _visible(root) == []
    right = downloads.file_digest(ants_bees_zip)
    assert examples.unpack_archive(ants_bees_zip, root, sha256=right).is_dir()


@pytest.fixture()
def local_server(ants_bees_zip):
    """A real HTTP server on this machine serving the zip's folder."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(ants_bees_zip.parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_with_progress_checks_the_checksum_and_unpacks(ants_bees_zip, local_server, tmp_path):
    root, url = tmp_path / "data", f"{local_server}/{ants_bees_zip.name}"
    with pytest.raises(downloads.ChecksumError):
        examples.fetch("ants-bees", root, url=url, sha256="f" * 64)
    assert _visible(root) == [] and not list(root.glob(".transfer-studio-download-*"))
    seen: list[tuple[int, int | None]] = []
    folder = examples.fetch(
        "ants-bees", root, lambda d, t: seen.append((d, t)), url=url, sha256=downloads.file_digest(ants_bees_zip)
    )
    assert seen[-1] == (ants_bees_zip.stat().st_size, ants_bees_zip.stat().st_size)
    assert scan_folder(str(folder)).classes == ["ants", "bees"]


def test_examples_command_lists_and_unpacks(ants_bees_zip, tmp_path, capsys):
    assert cli.main(["examples"]) == 0
    listed = capsys.readouterr().out
    assert "ants-bees" in listed and "licence" in listed
    assert cli.main(["examples", "--from-zip", str(ants_bees_zip), str(tmp_path / "data")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "data" / "ants-and-bees")


def test_the_example_set_that_ships_with_the_app_needs_no_internet(tmp_path, capsys, monkeypatch):
    """A class with no internet still has pictures: the small clothes set is
    copied (no download is tried: the proxy goes nowhere) into a new folder
    that trains as it is, and a second copy never writes over the first."""
    monkeypatch.setenv("https_proxy", _closed_port_url(""))
    monkeypatch.setenv("http_proxy", _closed_port_url(""))
    root = tmp_path / "data"
    ex = examples.example("clothes-4")
    assert not ex.needs_internet and ex.url is None
    folder = examples.fetch("clothes-4", root)
    assert folder == root / "clothes-4"
    report = scan_folder(str(folder))
    assert report.can_train and report.classes == ["hat", "pants", "shoes", "t-shirt"]
    assert (len(report.train), len(report.val), report.skipped) == (40, 16, [])
    assert not list(folder.glob("*.md")) and not list(folder.glob("*.py"))  # the pictures only
    assert cli.main(["examples", "--fetch", "clothes-4", str(root)]) == 0
    assert capsys.readouterr().out.strip() == str(root / "clothes-4-2")
    assert _visible(root) == ["clothes-4", "clothes-4-2"]


# --- standard datasets, in their own formats ----------------------------------------


def _pictures(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's cPickle wrote its str (BINSTRING), as in the
    real CIFAR files: they come back as latin1 text, which numpy turns back
    into an array's bytes."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj) -> bytes:
    out = io.BytesIO()
    _Python2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def _cifar_tree(folder: Path, per_batch: int, names: list[str], hundred: bool = False) -> None:
    """A tiny cifar-10-batches-py (pickled as Python 2 did, like the real
    files) or cifar-100-python (pickled by Python 3) folder in CIFAR's layout."""
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"
    files = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for n, name in enumerate(files):
        labels = [i % len(names) for i in range(per_batch)]
        batch = {b"data": _pictures(per_batch, (3 * 32 * 32,), n), key.encode(): labels, b"batch_label": b"x"}
        (folder / name).write_bytes(pickle.dumps(batch) if hundred else _py2_pickle(batch))
    meta = {("fine_label_names" if hundred else "label_names"): names}
    (folder / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta))


def _tar(source: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


def _counts(folder: Path) -> dict[str, dict[str, int]]:
    return {
        split.name: {c.name: len(list(c.glob("*.png"))) for c in sorted(split.iterdir())}
        for split in sorted(folder.iterdir())
    }


def test_cifar10_archive_becomes_a_balanced_class_per_folder_tree(tmp_path):
    made = tmp_path / "made"
    _cifar_tree(made / "cifar-10-batches-py", per_batch=12, names=["cat", "dog", "frog"])
    archives = tmp_path / "data" / ".downloads"
    archives.mkdir(parents=True)
    _tar(made / "cifar-10-batches-py", archives / "cifar-10-python.tar.gz")
    folder = standard_datasets.import_dataset("cifar10", tmp_path / "data", per_class=5)
    assert folder.name == "cifar10-5-per-class"
    assert _counts(folder) == {"train": {"cat": 4, "dog": 4, "frog": 4}, "val": {"cat": 1, "dog": 1, "frog": 1}}
    report = scan_folder(str(folder))
    assert report.classes == ["cat", "dog", "frog"] and report.split_source == "folders"
    assert (len(report.train), len(report.val), len(report.skipped)) == (12, 3, 0)
    with Image.open(next(folder.rglob("*.png"))) as img:
        assert (img.size, img.mode) == ((32, 32), "RGB")
    # Deterministic: the same call picks the same pictures.
    again = standard_datasets.import_dataset("cifar10", tmp_path / "data", per_class=5)
    assert sorted(p.relative_to(again) for p in again.rglob("*.png")) == sorted(
        p.relative_to(folder) for p in folder.rglob("*.png")
    )


def test_cifar100_folder_as_torchvision_unpacks_it(tmp_path):
    archives = tmp_path / "archives"
    _cifar_tree(archives / "cifar-100-python", per_batch=20, names=["apple", "aquarium_fish"], hundred=True)
    folder = standard_datasets.import_dataset("CIFAR-100", tmp_path / "data", per_class=10, archive_dir=archives)
    assert _counts(folder) == {"train": {"apple": 8, "aquarium fish": 8}, "val": {"apple": 2, "aquarium fish": 2}}


def test_a_cifar_file_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    archives = tmp_path / "archives"
    _cifar_tree(archives / "cifar-10-batches-py", per_batch=4, names=["a", "b"])

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (archives / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(UserError, match="cannot|not allowed|safely"):
        standard_datasets.import_dataset("cifar10", tmp_path / "data", per_class=2, archive_dir=archives)
    assert not marker.exists()
    assert _visible(tmp_path / "data") == []


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files_become_class_folders(tmp_path):
    raw = tmp_path / "data" / ".downloads" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 40), ("t10k", 20)):
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(_pictures(n, (28, 28), n)))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(np.arange(n) % 10))
    assert cli.main(["import-dataset", "fashion-mnist", str(tmp_path / "data"), "--per-class", "3"]) == 0
    folder = tmp_path / "data" / "fashion-mnist-3-per-class"
    counts = _counts(folder)
    assert len(counts["train"]) == 10 and set(counts["train"].values()) == {2} and set(counts["val"].values()) == {1}
    assert "T-shirt or top" in counts["train"] and "Ankle boot" in counts["val"]
    report = scan_folder(str(folder))
    assert (len(report.classes), len(report.train), len(report.val)) == (10, 20, 10)


def test_stl10_binary_archive_becomes_class_folders(tmp_path):
    base = tmp_path / "made" / "stl10_binary"
    base.mkdir(parents=True)
    for split, n in (("train", 6), ("test", 4)):
        (base / f"{split}_X.bin").write_bytes(_pictures(n, (3, 96, 96), n).tobytes())
        (base / f"{split}_y.bin").write_bytes(bytes(1 + i % 2 for i in range(n)))
    (base / "class_names.txt").write_text("airplane\nbird\n")
    archives = tmp_path / "archives"
    archives.mkdir()
    _tar(base, archives / "stl10_binary.tar.gz")
    folder = standard_datasets.import_dataset("stl10", tmp_path / "data", per_class=4, archive_dir=archives)
    assert _counts(folder) == {"train": {"airplane": 3, "bird": 3}, "val": {"airplane": 1, "bird": 1}}
    with Image.open(next(folder.rglob("*.png"))) as img:
        assert img.size == (96, 96)


def test_offline_and_no_archive_names_the_file_and_the_downloads_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "data"
    mirror = _closed_port_url("").rstrip("/")
    with pytest.raises(downloads.OfflineError) as caught:
        standard_datasets.import_dataset("cifar10", root, per_class=5, mirror=mirror, connect_timeout=2)
    message = str(caught.value)
    # The person's Downloads folder, where a browser puts the file: not the app's hidden .downloads.
    assert "cifar-10-python.tar.gz" in message and str(tmp_path / "home" / "Downloads") in message
    assert "no internet" in message and ".downloads" not in message
    with pytest.raises(downloads.OfflineError) as caught:
        standard_datasets.import_dataset("mnist", root, mirror=mirror, connect_timeout=2)
    assert "train-images-idx3-ubyte.gz" in str(caught.value)
    assert _visible(root) == []


def test_files_in_the_downloads_folder_are_checked_and_copied(tmp_path, monkeypatch):
    import dataclasses
    import hashlib

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    downloaded = tmp_path / "home" / "Downloads"
    downloaded.mkdir(parents=True)
    mnist = standard_datasets.standards()["mnist"]
    files = []
    for name, url, _ in mnist.files:  # small real idx files, under MNIST's names
        n = 20 if name.startswith("t10k") else 30
        content = _idx(np.arange(n) % 10) if "labels" in name else _idx(_pictures(n, (28, 28), n))
        (downloaded / name).write_bytes(content)
        files.append((name, url, hashlib.md5(content).hexdigest()))
    mirror = _closed_port_url("").rstrip("/")
    # Files whose checksums are not MNIST's: refused, named, nothing copied.
    archives = tmp_path / "data" / ".downloads"
    with pytest.raises(downloads.ChecksumError, match=r"The file in your Downloads folder \(train-images"):
        standard_datasets.locate(mnist, archives, mirror=mirror, connect_timeout=2)
    assert not list(archives.rglob("*.gz"))
    # The expected files: copied in (the person's own copies stay), and read from there.
    expected = dataclasses.replace(mnist, files=tuple(files))
    found = standard_datasets.locate(expected, archives, mirror=mirror, connect_timeout=2)
    assert found == archives / "MNIST" / "raw" and sorted(p.name for p in found.iterdir()) == sorted(
        name for name, _, _ in files
    )
    assert len(list(downloaded.iterdir())) == 4
    folder = standard_datasets.import_dataset("mnist", tmp_path / "data", per_class=3)
    assert len(_counts(folder)["train"]) == 10


def test_a_damaged_archive_is_a_clear_error(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "cifar-10-python.tar.gz").write_bytes(io.BytesIO(b"\x1f\x8b not really").getvalue())
    with pytest.raises(UserError, match="damaged or not the dataset's archive"):
        standard_datasets.import_dataset("cifar10", tmp_path / "data", archive_dir=archives)


# --- the Data page ---------------------------------------------------------------------


@pytest.fixture()
def data_page(env, monkeypatch):
    """The Data page in AppTest, every rerun through app.py as on the real
    server (see tests/test_app_pages.py)."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/1_data.py").run()
    assert not at.exception
    return at


def _shown(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_data_page_offline_example_says_so_and_points_to_the_camera(data_page, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_MIRROR", _closed_port_url("").rstrip("/"))
    at = data_page
    at.radio(key="example_pick").set_value("ants-bees").run()
    assert "Licence" in _shown(at.caption)
    at.button(key="example_fetch").click().run()
    assert not at.exception
    assert "no internet" in _shown(at.error)
    assert "camera" in _shown(at.error) and "Unpack from a zip you have" in _shown(at.error)


def test_data_page_offline_standard_dataset_gives_its_address_as_a_working_link(data_page, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_MIRROR", _closed_port_url("").rstrip("/"))
    at = data_page
    at.selectbox(key="standard_pick").set_value("cifar10").run()
    at.button(key="standard_make").click().run()
    assert not at.exception
    shown = _shown(at.error)
    assert "no internet" in shown
    # Markdown links the address by itself: an escaped `~` would open /%5C~kriz/, a page that is not there.
    assert "(https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)" in shown, shown


def test_data_page_fetches_an_example_and_chooses_it(data_page, env, local_server, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_MIRROR", local_server)
    at = data_page
    at.radio(key="example_pick").set_value("ants-bees").run()
    at.button(key="example_fetch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Ready to train" in _shown(at.success)
    assert at.session_state["data_dir"] == str(env / "data" / "ants-and-bees")


def test_data_page_offers_first_the_example_set_that_needs_no_internet(data_page, env, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_MIRROR", _closed_port_url("").rstrip("/"))  # no internet
    at = data_page
    assert at.radio(key="example_pick").value == "clothes-4"
    assert "come with Transfer Studio" in _shown(at.markdown) and "to download" not in _shown(at.markdown)
    at.button(key="example_fetch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Ready to train" in _shown(at.success) and not at.error
    assert at.session_state["data_dir"] == str(env / "data" / "clothes-4")
    assert {m.label: m.value for m in at.metric}["Classes"] == "4"


def test_data_page_makes_a_standard_dataset_folder_and_chooses_it(data_page, env):
    raw = env / "data" / ".downloads" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 30), ("t10k", 20)):
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(_pictures(n, (28, 28), n)))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(np.arange(n) % 10))
    at = data_page
    at.selectbox(key="standard_pick").set_value("mnist").run()
    at.number_input(key="standard_per_class").set_value(3).run()
    at.button(key="standard_make").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Ready to train" in _shown(at.success)
    assert at.session_state["data_dir"] == str(env / "data" / "mnist-3-per-class")
    assert {m.label: m.value for m in at.metric}["Classes"] == "10"
