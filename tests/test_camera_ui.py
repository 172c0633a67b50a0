"""The camera's words and what Python accepts from the browser (no server needed)."""

from __future__ import annotations

import base64

from tests.folders import PHOTOS
from ui.camera_classes import camera_problem
from ui.camera_component import MAX_FRAMES, _decoded


def test_every_camera_refusal_is_said_in_words_with_uploads_offered():
    assert camera_problem(None) is None and camera_problem({"status": "on"}) is None
    said = {
        name: camera_problem({"status": "error", "error": name, "message": "x"})
        for name in ("insecure", "NotAllowedError", "NotFoundError", "NotReadableError", "SomethingNew")
    }
    assert "localhost" in said["insecure"] and "https" in said["insecure"]
    assert "not allowed" in said["NotAllowedError"]
    assert "No camera was found" in said["NotFoundError"]
    assert "busy" in said["NotReadableError"]
    assert "SomethingNew" in said["SomethingNew"]
    assert all("add pictures from this computer" in text for text in said.values())


def test_a_burst_from_the_browser_is_checked_before_anything_is_saved():
    photo = sorted((PHOTOS / "train" / "hat").glob("*.jpg"))[0].read_bytes()
    good = base64.b64encode(photo).decode()
    burst = _decoded({"id": "a1", "target": "hat", "frames": [good, "not base64!", 42, good]})
    assert burst == {"id": "a1", "target": "hat", "frames": [photo, photo]}
    assert len(_decoded({"id": "b", "target": "x", "frames": [good] * (MAX_FRAMES + 5)})["frames"]) == MAX_FRAMES
    for junk in (None, "frames", {"frames": "x"}, {"id": 1}):
        assert _decoded(junk) is None
