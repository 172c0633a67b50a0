"""Multi-layer feature fusion: a head fed by the last stages' pooled outputs
trains from stored features, saves its per-stage weights, and the fused
model still predicts, explains and exports (real photos, real Lite0 weights)."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from core import cli, explain
from core.evaluation import load_run_model, predict_paths
from core.freeze import freeze_plan_for
from core.fusion import FusionHead
from core.models import HeadConfig, build_model
from core.runs import open_run
from tests.folders import PACKAGED_BACKBONE


@pytest.fixture(scope="module")
def fused_run(trained_run, small_data):
    return trained_run(
        small_data, backbone=PACKAGED_BACKBONE, strategy="linear", fusion="weighted", epochs=3, device="cpu", seed=0
    )


def test_a_stored_prefix_never_ends_among_the_fused_stages():
    names = build_model(PACKAGED_BACKBONE, 4, init="random").block_names  # stem, stage1..4, final_conv, pool, head
    settings = {"fusion": "concat", "fusion_stages": 3}
    assert freeze_plan_for(names, {"strategy": "linear", **settings}).frozen_prefix() == names.index("head")
    # last-2 trains stage4 and final_conv: the stored prefix stops before stage3, the first fused stage.
    assert freeze_plan_for(names, {"strategy": "last-2", **settings}).frozen_prefix() == names.index("stage3")
    assert freeze_plan_for(names, {"strategy": "last-2"}).frozen_prefix() == names.index("stage4")


@pytest.mark.parametrize("fusion", ["concat", "weighted", "attention"])
def test_fused_model_runs_the_same_whole_or_in_two_parts(fusion):
    torch.manual_seed(0)
    model = build_model(PACKAGED_BACKBONE, 4, init="random", head=HeadConfig(fusion=fusion, fusion_stages=3)).eval()
    assert model.taps == ["stage3", "stage4", "final_conv"]
    head = model.blocks["head"]
    assert isinstance(head, FusionHead) and head.dims == [112, 320, 1280]
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        whole = model(x)
        for k in (model.block_names.index("stage3"), model.block_names.index("head")):
            assert torch.allclose(model.forward_from(k, model.forward_to(k, x)), whole, atol=1e-5)
        stored = model.forward_to(model.block_names.index("head"), x)
    assert stored.shape == (2, 112 + 320 + 1280)  # the pooled vectors, not the maps
    with pytest.raises(ValueError):
        model.forward_from(model.block_names.index("stage4"), torch.randn(2, 112, 8, 8))


def test_fusion_trains_from_stored_features_and_saves_stage_weights(fused_run):
    run = open_run(fused_run)
    cache = run.status["feature_cache"]
    assert cache["used"] and cache["train"] and cache["prefix_blocks"] == run.status["blocks"].index("head")
    assert cache["feature_shape"] == [112 + 320 + 1280]
    record = json.loads((fused_run / "fusion.json").read_text())
    assert record["fusion"] == "weighted" and record["stages"] == ["stage3", "stage4", "final_conv"]
    assert len(record["weights"]) == 3 and sum(record["weights"]) == pytest.approx(1.0, abs=1e-3)
    assert max(record["weights"]) - min(record["weights"]) > 1e-4  # learned, not the starting 1/3 each
    loaded = load_run_model(fused_run)
    assert torch.allclose(
        torch.softmax(loaded.model.blocks["head"].stage_logits, 0), torch.tensor(record["weights"]), atol=1e-3
    )
    assert run.evaluation["accuracy"] >= 0.6  # 4 classes: far above chance


def test_fused_run_predicts_explains_and_exports(fused_run, tmp_path, capsys):
    loaded = load_run_model(fused_run)
    val = open_run(fused_run).scan["val"][0][0]
    top = predict_paths(fused_run, val, k=2)
    assert top and top[0]["top"][0][0] in loaded.classes
    heatmap, index, prob = explain.grad_cam(loaded, val)
    assert heatmap.shape[0] > 0 and 0 <= index < len(loaded.classes) and 0 < prob <= 1 and heatmap.max() > 0
    assert cli.main(["export", str(fused_run), "--out", str(tmp_path)]) == 0
    zip_path = tmp_path / f"{fused_run.name}.zip"
    with zipfile.ZipFile(zip_path) as zf:
        checks = json.loads(zf.read(f"{fused_run.name}/export_check.json"))
    for fmt in ("torchscript", "onnx"):
        assert checks[fmt]["checked"] and checks[fmt]["same_top_class"], checks
        assert checks[fmt]["max_abs_difference"] < 1e-3
