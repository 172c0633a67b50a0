"""The command line's ways to pictures without a folder of your own:
`examples` (list, fetch or unpack an example set) and `import-dataset`
(a standard dataset as a class-per-folder tree)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .paths import pasted_path

# The app's data folder when nothing else is said (ui.state.places reads the same variable).
DEFAULT_DATA_DIR = os.environ.get("TRANSFER_STUDIO_DATA") or "data"


def _report(what: str, fraction: float) -> None:
    print(f"\r{what} ({fraction:.0%})", end="", file=sys.stderr, flush=True)


def cmd_examples(args) -> int:
    from . import examples
    from .downloads import OfflineError

    root = Path(args.data_dir)
    if args.from_zip:
        folder = examples.unpack_archive(Path(args.from_zip), root, args.fetch)
    elif args.fetch:

        def progress(done: int, total: int | None) -> None:
            size = f" of {total / 2**20:,.1f}" if total else ""
            _report(f"Downloading {done / 2**20:,.1f}{size} MB", done / total if total else 0.0)

        try:
            folder = examples.fetch(args.fetch, root, progress)
        except OfflineError as exc:
            zip_path = root / examples.example(args.fetch).archive
            raise OfflineError(f"{exc} On the command line: python -m core examples --from-zip {zip_path}") from exc
        print(file=sys.stderr)
    else:
        for ex in examples.EXAMPLES.values():
            size = f"about {ex.about_mb} MB" if ex.needs_internet else "comes with Transfer Studio"
            print(f"{ex.name}: {ex.title}, {size}. {ex.inside}\n  {ex.words}")
            print(f"  licence: {ex.licence} {ex.licence_url}\n  from: {ex.url or examples.BUNDLED / str(ex.bundled)}")
        return 0
    print(folder)
    return 0


def cmd_import_dataset(args) -> int:
    from .standard_datasets import import_dataset

    folder = import_dataset(
        args.name,
        Path(args.data_dir),
        args.per_class,
        archive_dir=Path(args.archives) if args.archives else None,
        report=_report,
        mirror=args.mirror,
    )
    print(file=sys.stderr)
    print(folder)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .standard_datasets import ARCHIVE_FOLDER, DEFAULT_PER_CLASS

    p = sub.add_parser("examples", help="list the example picture sets, or fetch or unpack one into a new folder")
    p.add_argument(
        "data_dir", nargs="?", default=DEFAULT_DATA_DIR, help=f"the data folder (default: {DEFAULT_DATA_DIR})"
    )
    p.add_argument(
        "--fetch",
        metavar="NAME",
        default=None,
        help="download this example set and unpack it (or copy it, if it ships)",
    )
    p.add_argument("--from-zip", metavar="PATH", default=None, help="unpack an example set's zip you already have")
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser(
        "import-dataset",
        help="a standard dataset (cifar10, cifar100, mnist, fashion-mnist, stl10) as one folder per class",
    )
    p.add_argument("name", help="cifar10 | cifar100 | mnist | fashion-mnist | stl10")
    p.add_argument("data_dir", type=pasted_path, help="the data folder: the new folder is made inside it")
    p.add_argument(
        "--per-class",
        type=int,
        default=DEFAULT_PER_CLASS,
        metavar="N",
        help=f"pictures per class, a fifth of them to check with (default: {DEFAULT_PER_CLASS})",
    )
    p.add_argument(
        "--archives",
        default=None,
        metavar="DIR",
        help=f"where the downloaded archives are kept (default: DATA_DIR/{ARCHIVE_FOLDER})",
    )
    p.add_argument("--mirror", default=None, metavar="URL", help="download the archives from this address instead")
    p.set_defaults(func=cmd_import_dataset)
