"""Safe by default: every picture's decoded size is bounded on every path,
and only regular files are ever opened."""

from __future__ import annotations

import io
import os
import threading

import pytest
from PIL import Image

from core.evaluation import list_images
from core.images import MAX_ASPECT, MAX_IMAGE_PIXELS, bounded_rgb, open_rgb
from core.loading import make_transform


def _strip_png(path):
    """149 bytes on disk, 1x16000 pixels: resized to a 256-pixel short side
    it would become 256x4,096,000 (4 GB as floats)."""
    Image.new("RGB", (1, 16000), (200, 10, 10)).save(path)
    return path


def test_extreme_strip_is_cropped_never_expanded(tmp_path):
    strip = _strip_png(tmp_path / "strip.png")
    assert os.path.getsize(strip) < 400
    image = open_rgb(strip)
    assert max(image.size) <= MAX_ASPECT * min(image.size)
    tensor = make_transform(224, 256, [0.5] * 3, [0.5] * 3)(image)
    assert tuple(tensor.shape) == (3, 224, 224)
    # The same picture handed over in memory (an upload, the camera) and as bytes.
    assert bounded_rgb(Image.open(strip)).size == image.size
    assert open_rgb(io.BytesIO(strip.read_bytes())).size == image.size


def test_one_pixel_limit_for_files_and_uploads():
    side = int(MAX_IMAGE_PIXELS**0.5) + 100  # just over the limit
    huge = Image.new("L", (side, side))
    with pytest.raises(ValueError, match="too large"):
        bounded_rgb(huge)
    buffer = io.BytesIO()
    huge.save(buffer, "PNG")
    del huge
    with pytest.raises(ValueError, match="too large"):
        open_rgb(io.BytesIO(buffer.getvalue()))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_named_like_a_picture_is_never_opened(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "real.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    assert list_images(tmp_path) == [tmp_path / "real.jpg"]
    outcome = {}

    def try_open():
        try:
            open_rgb(tmp_path / "pipe.jpg")
        except Exception as exc:  # noqa: BLE001 - what it raised is the result
            outcome["error"] = exc

    worker = threading.Thread(target=try_open, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "opening a FIFO hung"
    assert "regular file" in str(outcome["error"])


def test_names_from_a_browser_keep_their_letters_and_stay_in_their_folder(tmp_path):
    """An uploaded file's or a typed class's name: accents and other scripts
    kept (a Mac sends é as e and a separate accent), nothing that leaves the
    folder or hides a file."""
    import unicodedata

    from core.names import free_name, safe_name

    assert safe_name("Fourmi été n°1 (copie).jpg") == "Fourmi été n1 (copie).jpg"
    assert safe_name(unicodedata.normalize("NFD", "été.jpg")) == "été.jpg"
    assert safe_name("蜜蜂") == "蜜蜂"
    for hostile in ("../../etc/passwd", "..", ".hidden", "a/b\\c", "x\x00y", " . ", "C:\\evil"):
        name = safe_name(hostile)
        assert name and "/" not in name and "\\" not in name and not name.startswith(".") and "\x00" not in name
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    (tmp_path / "été.jpg").write_bytes(b"x")
    assert free_name(tmp_path, safe_name("été.jpg")).name == "été-2.jpg"  # a taken name is never replaced
