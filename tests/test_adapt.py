"""Domain adaptation on a shift built from real photos (darker, greyer, a
colour cast, noise: tests/shift.py): the adapted model must name at least 5
points more of the shifted pictures than the same run without adaptation,
and not through AdaBN alone (recorded beside it)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch

from core import cli
from core.adapt import ADAPTED_FILE, read_record, with_alignment
from core.models import build_model
from tests.folders import PACKAGED_BACKBONE, PHOTOS
from tests.shift import shifted_copy


@pytest.mark.slow
def test_self_training_gains_on_shifted_pictures(linear_probe_run, tmp_path):
    # The session's shared linear probe (trained once for many tests), copied: it stays as it was.
    run = shutil.copytree(linear_probe_run, tmp_path / linear_probe_run.name)
    target = tmp_path / "dim-room"
    for split in ("train", "val"):
        shifted_copy(PHOTOS / split, target)  # 56 pictures in class subfolders, used only to score
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["adapt", str(run), str(target)]) == 0
    record = json.loads(out.getvalue().strip().splitlines()[-1])
    assert record == read_record(run)
    assert record["method"] == "self-training" and record["target_pictures"] == record["scored_pictures"] == 56
    t = record["target"]
    assert t["before"] < record["source"]["before"]  # the shift hurts
    assert t["after"] >= t["before"] + 0.05, record  # measured: 0.429 -> 0.732 (AdaBN alone: 0.286)
    assert t["after"] > t["adabn"], record  # the gain is not AdaBN's
    assert record["source"]["before"] is not None and record["source"]["after"] is not None
    # adapted.pt is a whole model: the run's network with the aligned, retrained head.
    payload = torch.load(run / ADAPTED_FILE, map_location="cpu", weights_only=True)
    model = with_alignment(build_model(PACKAGED_BACKBONE, len(payload["classes"]), init="random"))
    model.load_state_dict(payload["model"])
    assert payload["adapt"]["target"] == t
