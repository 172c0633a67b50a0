"""The standard datasets the tutorials train on (CIFAR-10, CIFAR-100, MNIST,
Fashion-MNIST, STL-10) as an ordinary class-per-folder tree of PNG files, with
a few pictures per class: a quick demo needs 100, not 5,000.

The archives are the ones torchvision.datasets downloads (its URLs, file
names, folder layout and md5 checksums), kept in one folder (`archive_dir`,
by default `.downloads` inside the data folder). A dataset already unpacked
there by torchvision is read as it is. The files are read by
core.dataset_formats (never plainly unpickled), and the new folder is made
with core.unpack's rules: a hidden staging folder, renamed at the end.

The tree: `train/<class>/` from the dataset's training pictures and `val/<class>/`
from its test pictures, so the pictures that check the model were never
seen in training, and core.scan reads it as its train/val split.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import dataset_formats as fmt
from . import downloads
from .errors import UserError
from .names import safe_name
from .unpack import publish, staging

DEFAULT_PER_CLASS = 100
MAX_PER_CLASS = 5000
# The share of each class's pictures that goes to val/ (from the test split).
VAL_SHARE = 0.2
ARCHIVE_FOLDER = ".downloads"

Report = Callable[[str, float], None]  # (what is happening, fraction done 0..1)


@dataclass(frozen=True)
class Standard:
    name: str  # for the command line
    title: str
    words: str
    files: tuple[tuple[str, str, str], ...]  # (file name, URL, md5) to download, as torchvision does
    place: str  # inside the archive folder: the archive file or the folder that holds the files
    licence: str


def _torchvision_sources() -> dict[str, Standard]:
    from torchvision import datasets as tv

    def idx_files(cls) -> tuple[tuple[str, str, str], ...]:
        return tuple((name, cls.mirrors[0] + name, md5) for name, md5 in cls.resources)

    return {
        s.name: s
        for s in (
            Standard(
                "cifar10",
                "CIFAR-10",
                "Small 32×32 colour photos of 10 things: planes, cars, birds, cats, deer, dogs, frogs, horses, "
                "ships, trucks. The set the PyTorch tutorials train on.",
                ((tv.CIFAR10.filename, tv.CIFAR10.url, tv.CIFAR10.tgz_md5),),
                tv.CIFAR10.filename,
                "From Alex Krizhevsky's page (University of Toronto), free for research and teaching.",
            ),
            Standard(
                "cifar100",
                "CIFAR-100",
                "Small 32×32 colour photos of 100 things (apples, bicycles, clouds, …): harder than CIFAR-10.",
                ((tv.CIFAR100.filename, tv.CIFAR100.url, tv.CIFAR100.tgz_md5),),
                tv.CIFAR100.filename,
                "From Alex Krizhevsky's page (University of Toronto), free for research and teaching.",
            ),
            Standard(
                "mnist",
                "MNIST",
                "Handwritten digits 0 to 9, small grey 28×28 pictures.",
                idx_files(tv.MNIST),
                "MNIST/raw",
                "Yann LeCun and Corinna Cortes, CC BY-SA 3.0.",
            ),
            Standard(
                "fashion-mnist",
                "Fashion-MNIST",
                "Small grey 28×28 pictures of 10 kinds of clothes and shoes, from Zalando's shop.",
                idx_files(tv.FashionMNIST),
                "FashionMNIST/raw",
                "Zalando Research, MIT licence.",
            ),
            Standard(
                "stl10",
                "STL-10",
                "96×96 colour photos of 10 things (like CIFAR-10, larger and fewer). The archive is 2.6 GB.",
                ((tv.STL10.filename, tv.STL10.url, tv.STL10.tgz_md5),),
                tv.STL10.filename,
                "Adam Coates, Honglak Lee, Andrew Ng (Stanford), for research and teaching.",
            ),
        )
    }


@functools.cache
def standards() -> dict[str, Standard]:
    """The datasets by name (torchvision is imported on the first call only)."""
    return _torchvision_sources()


def standard(name: str) -> Standard:
    key = name.lower().replace("_", "-")
    key = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fashionmnist": "fashion-mnist", "stl-10": "stl10"}.get(
        key, key
    )
    if key not in standards():
        raise UserError(f"There is no standard dataset named {name!r}. There are: {', '.join(standards())}.")
    return standards()[key]


def default_archive_dir(data_root: Path) -> Path:
    return Path(data_root) / ARCHIVE_FOLDER


# --- finding (or downloading) the files -------------------------------------------


def _unpacked_folder(std: Standard) -> str | None:
    """The folder torchvision unpacks an archive into (read as it is when there)."""
    return {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary"}.get(std.name)


def _where(std: Standard, archive_dir: Path) -> Path | None:
    """The archive or folder to read `std` from, or None when it is not here."""
    if std.place.endswith("/raw"):
        folder = archive_dir / std.place
        return folder if all((folder / name).is_file() for name, _, _ in std.files) else None
    unpacked = archive_dir / _unpacked_folder(std)
    if unpacked.is_dir():
        return unpacked
    archive = archive_dir / std.place
    return archive if archive.is_file() else None


def downloads_folder() -> Path:
    """Where a browser saves what a person downloads."""
    return Path.home() / "Downloads"


def _missing_message(std: Standard, archive_dir: Path) -> str:
    names = ", ".join(name for name, _, _ in std.files)
    urls = " ".join(url for _, url, _ in std.files)
    them = "them" if len(std.files) > 1 else "it"
    # The Downloads folder first: the folder the app keeps them in is hidden (its name starts with a dot),
    # and a file manager may refuse to make it.
    return (
        f"There is no internet connection, and {std.title} is not on this computer. On a computer with internet, "
        f"download {names} ({urls}) and put {them} in your Downloads folder ({downloads_folder()}), then press "
        "the button again: Transfer Studio copies it from there. Or make your own classes with the camera."
    )


def _copy_from_downloads(std: Standard, target: Path) -> None:
    """The files a person downloaded with their browser, copied from their
    Downloads folder into `target` (theirs is left as it is), each checked
    against its md5 first, as a download is."""
    for name, _, md5 in std.files:
        found = downloads_folder() / name
        if (target / name).is_file() or not found.is_file():
            continue
        downloads.check_digest(found, md5, "md5", what="The file in your Downloads folder")
        target.mkdir(parents=True, exist_ok=True)
        partial = target / f".{name}.copying"
        shutil.copyfile(found, partial)
        partial.replace(target / name)


def locate(
    std: Standard, archive_dir: Path, report: Report | None = None, connect_timeout=None, mirror: str | None = None
) -> Path:
    """The archive or folder holding `std`: already here, or downloaded now
    (md5 checked, as torchvision checks it), from `mirror` (an address that
    holds the same file names) when given, or copied from the person's
    Downloads folder. Offline: an OfflineError that names the files, where
    to get them and where to put them."""
    found = _where(std, archive_dir)
    if found is not None:
        return found
    target = archive_dir / std.place if std.place.endswith("/raw") else archive_dir
    _copy_from_downloads(std, target)
    timeout = connect_timeout or downloads.CONNECT_TIMEOUT
    for n, (name, url, md5) in enumerate(std.files):
        if (target / name).is_file():
            continue
        url = f"{mirror.rstrip('/')}/{name}" if mirror else url

        def progress(done: int, total: int | None, n=n, name=name) -> None:
            if report:
                part = done / total if total else 0.0
                report(f"Downloading {name}: {done / 2**20:,.1f} MB", (n + part) / len(std.files) * 0.8)

        if not downloads.reachable(url, timeout):
            raise downloads.OfflineError(_missing_message(std, archive_dir))
        downloads.download(url, target / name, checksum=md5, algorithm="md5", max_bytes=4 << 30, progress=progress)
    found = _where(std, archive_dir)
    if found is None:  # cannot happen once every file is there
        raise UserError(_missing_message(std, archive_dir))
    return found


# --- reading ----------------------------------------------------------------------

Split = tuple[np.ndarray, np.ndarray]  # (pictures N×H×W[×3] uint8, labels N)


def _read_cifar(std: Standard, source: Path) -> tuple[list[str], Split, Split]:
    if std.name == "cifar10":
        base, train_files, test_files, meta, key, names_key = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            "batches.meta",
            "labels",
            "label_names",
        )
    else:
        base, train_files, test_files, meta, key, names_key = (
            "cifar-100-python",
            ["train"],
            ["test"],
            "meta",
            "fine_labels",
            "fine_label_names",
        )
    data = fmt.read_members(source, base, [*train_files, *test_files, meta])

    def join(files: list[str]) -> Split:
        parts = [fmt.cifar_batch(data[f], f"{source.name}/{f}", key) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return fmt.cifar_names(data[meta], f"{source.name}/{meta}", names_key), join(train_files), join(test_files)


def _read_idx(std: Standard, source: Path) -> tuple[list[str], Split, Split]:
    from torchvision import datasets as tv

    names = [name for name, _, _ in std.files]
    data = fmt.read_members(source, "", names)
    images = {n: fmt.read_idx(data[n], n, 3) for n in names if "images" in n}
    labels = {n: fmt.read_idx(data[n], n, 1).astype(np.int64) for n in names if "labels" in n}
    classes = (tv.MNIST if std.name == "mnist" else tv.FashionMNIST).classes
    split = {
        prefix: (images[f"{prefix}-images-idx3-ubyte.gz"], labels[f"{prefix}-labels-idx1-ubyte.gz"])
        for prefix in ("train", "t10k")
    }
    return list(classes), split["train"], split["t10k"]


def _read_stl(std: Standard, source: Path) -> tuple[list[str], Split, Split]:
    names = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt"]
    data = fmt.read_members(source, "stl10_binary", names)
    classes = [line.strip() for line in data["class_names.txt"].decode("utf-8", "replace").splitlines() if line.strip()]
    return (
        classes,
        (fmt.stl_images(data["train_X.bin"], "train_X.bin"), fmt.stl_labels(data["train_y.bin"])),
        (fmt.stl_images(data["test_X.bin"], "test_X.bin"), fmt.stl_labels(data["test_y.bin"])),
    )


def read(std: Standard, source: Path) -> tuple[list[str], Split, Split]:
    """(class names, train split, test split) of `std` from its archive or folder."""
    reader = {"cifar10": _read_cifar, "cifar100": _read_cifar, "stl10": _read_stl}.get(std.name, _read_idx)
    classes, train, test = reader(std, source)
    for what, (images, labels) in (("training", train), ("test", test)):
        if len(images) != len(labels):
            raise UserError(f"{std.title}'s {what} files hold {len(images)} pictures but {len(labels)} labels.")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise UserError(f"{std.title}'s {what} labels do not match its {len(classes)} class names.")
    return classes, train, test


# --- choosing and writing ---------------------------------------------------------


def split_counts(per_class: int) -> tuple[int, int]:
    """(pictures to learn from, pictures to check with) per class."""
    n_val = max(1, round(per_class * VAL_SHARE)) if per_class >= 2 else 0
    return per_class - n_val, n_val


def pick(labels: np.ndarray, n_classes: int, count: int, seed: int = 0) -> dict[int, np.ndarray]:
    """For each class, `count` of its indices (all when it has fewer): chosen
    at random with a fixed seed, so the same call picks the same pictures."""
    chosen = {}
    for label in range(n_classes):
        where = np.flatnonzero(labels == label)
        order = np.random.default_rng([seed, label]).permutation(len(where))
        chosen[label] = np.sort(where[order[:count]])
    return chosen


def class_folder_names(classes: list[str]) -> list[str]:
    """Class names as folder names ('T-shirt/top' -> 'T-shirt or top'), all different."""
    out: list[str] = []
    for n, name in enumerate(classes):
        folder = safe_name(name.replace("/", " or ").replace("_", " "), f"class {n}")
        out.append(folder if folder not in out else f"{folder} {n}")
    return out


def import_dataset(
    name: str,
    data_root: Path,
    per_class: int = DEFAULT_PER_CLASS,
    *,
    archive_dir: Path | None = None,
    report: Report | None = None,
    seed: int = 0,
    connect_timeout: float | None = None,
    mirror: str | None = None,
) -> Path:
    """Write `per_class` pictures of each class of the dataset `name` as PNG
    files into a new folder inside `data_root` (train/ and val/, one
    subfolder per class); return the folder. `mirror`: download from
    there instead of the dataset's own address."""
    std = standard(name)
    if not 1 <= int(per_class) <= MAX_PER_CLASS:
        raise UserError(f"Pictures per class must be between 1 and {MAX_PER_CLASS}, not {per_class}.")
    data_root = Path(data_root)
    archive_dir = Path(archive_dir) if archive_dir else default_archive_dir(data_root)
    source = locate(std, archive_dir, report, connect_timeout, mirror)
    if report:
        report(f"Reading {std.title}", 0.8)
    classes, train, test = read(std, source)
    n_train, n_val = split_counts(int(per_class))
    folders = class_folder_names(classes)
    jobs = [("train", train, pick(train[1], len(classes), n_train, seed))]
    if n_val:
        jobs.append(("val", test, pick(test[1], len(classes), n_val, seed)))
    total = sum(len(ix) for _, _, chosen in jobs for ix in chosen.values()) or 1
    done = 0
    with staging(data_root) as tmp:
        for split, (images, _labels), chosen in jobs:
            for label, indices in chosen.items():
                folder = tmp / split / folders[label]
                folder.mkdir(parents=True, exist_ok=True)
                for index in indices:
                    Image.fromarray(images[index]).save(folder / f"{index:05d}.png", format="PNG")
                done += len(indices)
                if report:
                    report(f"Writing pictures: {done} of {total}", 0.8 + 0.2 * done / total)
        return publish(tmp, data_root, f"{std.name}-{per_class}-per-class")
