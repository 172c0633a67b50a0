"""Example pictures to start with when you have no folder of your own: a small
registry of openly shared sets, fetched (with progress and checksum) or
unpacked from a copy of the archive you already have, into a new folder
inside the data folder. One set ships with the app (assets/examples), so a
class with no internet still has pictures to start with: it is copied.

Unpacking follows core.unpack's rules (no path outside the folder, size caps,
pictures only, a hidden staging folder renamed at the end); a copy uses the
same staging folder.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import downloads
from .errors import UserError
from .unpack import MAX_UNPACKED_BYTES, TEMP_PREFIX, publish, staging, unpack_zip

# The sets that ship with the app, one folder each (train/ and val/ of class folders).
BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "examples"


@dataclass(frozen=True)
class ExampleSet:
    name: str  # the short name for the command line
    title: str  # what a person sees
    words: str  # one or two sentences: what it is good for
    url: str | None  # None: the set ships with the app (`bundled`)
    sha256: str | None  # None: not yet recorded, so only the size cap and the unpacking rules protect
    about_mb: int  # the archive's size, about (shown before the download; 3x is the cap)
    licence: str
    licence_url: str
    inside: str  # what the folder holds once unpacked
    folder: str  # the new folder's name inside the data folder
    archive: str  # the archive's file name (for "put the downloaded zip at …")
    bundled: str | None = None  # the set's folder in BUNDLED, for one that ships with the app

    @property
    def needs_internet(self) -> bool:
        return self.bundled is None

    @property
    def max_bytes(self) -> int:
        return min(3 * self.about_mb * 2**20 + 2**20, MAX_UNPACKED_BYTES)


EXAMPLES: dict[str, ExampleSet] = {
    e.name: e
    for e in (
        ExampleSet(
            name="clothes-4",
            title="Clothes, 4 kinds (no internet needed)",
            words="Small photos of hats, pants, shoes and t-shirts that come with Transfer Studio, so they work "
            "anywhere, offline too. Enough for a first demo in a minute; a real project needs more pictures.",
            url=None,
            sha256=None,
            about_mb=1,
            licence="CC0 1.0 Universal (public domain): free for any use, no attribution needed. From the "
            "clothing dataset small by Alexey Grigorev.",
            licence_url="https://creativecommons.org/publicdomain/zero/1.0/",
            inside="56 photos: train/ (10 of each kind) and val/ (4 of each).",
            folder="clothes-4",
            archive="",
            bundled="clothes",
        ),
        ExampleSet(
            name="ants-bees",
            title="Ants and bees",
            words="Two classes that look alike at first sight: the set PyTorch's transfer-learning tutorial "
            "uses. A network trained on ImageNet tells them apart after a minute's training.",
            url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
            # The sha256 of this zip is not published; it is to be recorded here once confirmed.
            sha256=None,
            about_mb=45,
            licence="Photos from ImageNet (collected from the web, each under its owner's terms), shared by the "
            "PyTorch tutorials (BSD 3-Clause) for learning and research.",
            licence_url="https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html",
            inside="About 400 photos: train/ (124 ants, 121 bees) and val/ (70 ants, 83 bees).",
            folder="ants-and-bees",
            archive="hymenoptera_data.zip",
        ),
        ExampleSet(
            name="clothing",
            title="Clothes (10 kinds)",
            words="Photos of clothes on a plain background: dress, hat, long sleeve, outwear, pants, shirt, "
            "shoes, shorts, skirt, t-shirt. Ten classes, with a held-out test/ set.",
            url="https://github.com/alexeygrigorev/clothing-dataset-small/archive/refs/heads/master.zip",
            sha256=None,  # a branch archive: GitHub does not promise the same bytes every time
            about_mb=110,
            licence="CC0 1.0 Universal (public domain): free for any use, no attribution needed.",
            licence_url="https://creativecommons.org/publicdomain/zero/1.0/",
            inside="About 3,800 photos of 10 kinds of clothes, in train/, validation/ and test/.",
            folder="clothes",
            archive="clothing-dataset-small-master.zip",
        ),
    )
}


def example(name: str) -> ExampleSet:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise UserError(f"There is no example set named {name!r}. There are: {', '.join(EXAMPLES)}.") from None


def offline_hint(ex: ExampleSet, data_root: Path) -> str:
    """What to do without internet, in words for a person."""
    return (
        "Take the example set that comes with Transfer Studio, make your own classes with the camera, "
        "or unpack a copy of the archive you already have: "
        f"put {ex.archive} at {Path(data_root) / ex.archive} and choose “Unpack from a zip you have”."
    )


def fetch(
    name: str,
    data_root: Path,
    progress: downloads.Progress | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    connect_timeout: float = downloads.CONNECT_TIMEOUT,
) -> Path:
    """Download the example set `name` and unpack it into a new folder inside
    `data_root`; return that folder. `url` and `sha256` replace the
    registry's (a mirror, a checksum confirmed since). Offline: an
    OfflineError at once, saying what to do instead. A set that ships with
    the app is copied: no download."""
    ex = example(name)
    data_root = Path(data_root)
    if not ex.needs_internet:
        return _copy_bundled(ex, data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX + "download-", dir=data_root) as tmp:
        archive = downloads.download(
            url or ex.url,
            Path(tmp) / ex.archive,
            checksum=sha256 or ex.sha256,
            max_bytes=ex.max_bytes,
            progress=progress,
            connect_timeout=connect_timeout,
            offline_hint=offline_hint(ex, data_root),
        )
        return _unpack(archive, data_root, ex.folder)


def unpack_archive(path: Path, data_root: Path, name: str | None = None, sha256: str | None = None) -> Path:
    """Unpack a copy of an example archive you already have into a new folder
    inside `data_root`; return the folder. Its checksum is checked when one
    is known: `sha256`, or the registry's for `name` or for the set whose
    archive has this file's name."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"There is no file at {path}. Check the path of the zip file.")
    ex = example(name) if name else next((e for e in EXAMPLES.values() if e.archive == path.name), None)
    expected = sha256 or (ex.sha256 if ex else None)
    downloads.check_digest(path, expected, what=f"The zip file for {ex.title}" if ex else "The zip file")
    return _unpack(path, data_root, ex.folder if ex else path.stem)


def _unpack(archive: Path, data_root: Path, folder: str) -> Path:
    with open(archive, "rb") as f:
        return unpack_zip(f, Path(data_root), folder).folder


def _copy_bundled(ex: ExampleSet, data_root: Path) -> Path:
    """Copy the pictures of a set that ships with the app (its train/ and val/
    folders; the notes beside them stay) into a new folder inside `data_root`."""
    source = BUNDLED / str(ex.bundled)
    with staging(Path(data_root)) as tmp:
        for split in ("train", "val"):
            shutil.copytree(source / split, tmp / split)
        return publish(tmp, Path(data_root), ex.folder)
