"""Checking every picture of a scan, and the verdicts kept for the next one.

The scan proves that each picture can be read by decoding it (`check_all`,
threads over core.images.verify_image). A training's scan, and the app's
Data page, also keep the verdicts (usable and its size, or why not) in a small JSON file per folder,
`<cache>/scans/<key>.json`, each with its file's fingerprint taken before the
decode: path, size, modification and change time (a chmod or a copy changes
the change time). The next scan of the same folder reuses them
only when every picture it would decode is still exactly as it was; any new,
removed or changed file and the scan decodes everything again, as the first
time. A broken picture keeps its verdict, so it is still listed as skipped.

A scan that reused verdicts decoded nothing, so it has no pixels to keep for
training: `decode_pictures` decodes them when the run needs them (pictures
read every epoch); a linear probe on stored features never does.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from .files import atomic_write_json
from .images import DecodedImageCache, decoded_cache_budget, estimate_decoded_bytes, too_big_to_keep, verify_image
from .paths import pasted_path

_VERSION = 1  # raise it when a verdict could come out differently (verify_image's rules)
CHECKED_BEFORE = "every picture was checked by an earlier scan and has not changed since, so none was decoded again"


def check_all(paths: list[str], keep_side: int | None = None, budget: int = 0, interpolation="bilinear", on_file=None):
    """{path: (size, reason)}, and with keep_side the usable images' pixels
    {path: array} while they fit in `budget` bytes (else None and why not)."""
    # PIL releases the GIL while decoding, so threads give real parallelism
    # without the start-up cost (and pickling) of processes.
    workers = max(2, min(16, 2 * (os.cpu_count() or 1)))
    results: dict = {}
    kept: dict | None = {} if keep_side else None
    why, used = None, 0
    with warnings.catch_warnings():
        # Images over PIL's own limit are refused by our (lower) limit anyway;
        # silence PIL's warning so the console is not cluttered. Note: the
        # filter is process-wide while the scan runs (warnings is global).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for path, (size, reason, pixels) in zip(
                paths, pool.map(lambda p: verify_image(p, keep_side, interpolation), paths)
            ):
                results[path] = (size, reason)
                if on_file is not None:
                    on_file(len(results), len(paths))
                if kept is not None and pixels is not None:
                    used += pixels.nbytes
                    kept[path] = pixels
                    if used > budget:  # the estimate was low: stop keeping, memory stays bounded
                        kept, why = None, too_big_to_keep(used * len(paths) // len(results), budget)
    return results, kept, why


def decode_pictures(
    paths: list[str], short_side: int, budget: int | None = None, interpolation: str = "bilinear", on_file=None
) -> tuple[DecodedImageCache | None, str | None]:
    """The pictures a scan that reused its verdicts did not decode, decoded
    and kept as scan_and_decode keeps them: (cache, None), or (None, why)
    when they would not fit in `budget` bytes (default decoded_cache_budget())."""
    budget = decoded_cache_budget() if budget is None else int(budget)
    need = estimate_decoded_bytes(paths, short_side)
    if need > budget:
        return None, too_big_to_keep(need, budget)
    _, kept, why = check_all(paths, short_side, budget, interpolation, on_file)
    if kept is None:
        return None, why
    return DecodedImageCache(short_side, kept, interpolation), None


def _fingerprint(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class CheckedPictures:
    """The verdicts of a folder's last checked scan, kept under `cache_dir`."""

    def __init__(self, cache_dir: str | Path, root: str, trust_kept: bool = True):
        self.root = root
        self.trust_kept = trust_kept  # False: `fresh` takes the fingerprints and reuses no verdict
        key = hashlib.sha256(f"{_VERSION}:{root}".encode()).hexdigest()[:32]
        self.path = Path(cache_dir) / "scans" / f"{key}.json"
        self._fingerprints: dict[str, list[int] | None] = {}

    def fresh(self, paths: list[str]) -> dict | None:
        """{path: (size, reason)} when every path has a kept verdict and is
        unchanged since; else None (decode them, then `keep`). The files'
        fingerprints are taken now, before any decoding, so a file changed
        while it is decoded reads as changed next time."""
        self._fingerprints = {path: _fingerprint(path) for path in paths}
        if not self.trust_kept:
            return None
        try:
            stored = json.loads(self.path.read_text())
            files = stored["files"] if stored.get("version") == _VERSION and stored.get("root") == self.root else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # none yet, or a damaged file: never trusted
        verdicts = {}
        for path, now in self._fingerprints.items():
            entry = files.get(path)
            if now is None or not isinstance(entry, list) or len(entry) != 6 or entry[:3] != now:
                return None
            width, height, reason = entry[3:]
            verdicts[path] = ((width, height), None) if reason is None else (None, reason)
        return verdicts

    def keep(self, verdicts: dict) -> None:
        """Keep the verdicts of this scan (of the files `fresh` was asked
        about) for the next one. A cache folder that cannot be written only
        means the next scan decodes again."""
        files = {}
        for path, (size, reason) in verdicts.items():
            fingerprint = self._fingerprints.get(path)
            if fingerprint is not None:
                files[path] = [*fingerprint, *(size or (None, None)), reason]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"version": _VERSION, "root": self.root, "files": files})
        except OSError:
            pass


def checked_pictures(cache_dir: str | os.PathLike | None, root: str, trust_kept=True) -> CheckedPictures | None:
    """The kept verdicts of the folder `root` (as pasted) under `cache_dir`;
    None without a cache folder. trust_kept=False: none is reused (every
    picture is decoded), and this scan's are kept."""
    return CheckedPictures(cache_dir, os.path.abspath(pasted_path(root)), trust_kept) if cache_dir else None
