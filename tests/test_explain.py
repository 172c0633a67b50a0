"""Understanding a run: mistakes, confusion-matrix cells, Grad-CAM, embeddings.

Real photos, a real fine-tuned MobileNetV2 (conftest's fine_tuned_run), real
pretrained EfficientNet-Lite0 weights and a randomly initialised ViT-B/16.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core import explain
from core.evaluation import cell_images, load_run_model, mistakes, per_class_table
from core.images import open_rgb
from core.models import build_model
from core.runs import open_run
from ui.charts import confusion_figure


@pytest.fixture(scope="module")
def run_dir(fine_tuned_run):
    return fine_tuned_run


@pytest.fixture(scope="module")
def loaded(run_dir):
    return load_run_model(run_dir)


def _check_heatmap(heatmap: np.ndarray, size: int = 224) -> None:
    assert heatmap.shape == (size, size)
    assert heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all()
    assert heatmap.min() == pytest.approx(0.0, abs=1e-6) and heatmap.max() == pytest.approx(1.0, abs=1e-6)
    assert heatmap.std() > 0.05  # not constant: it points somewhere


# --- eval.json: mistakes and confusion-matrix cells --------------------------------


def test_mistakes_and_cells_come_from_eval_json(run_dir):
    ev = open_run(run_dir).evaluation
    rows = ev["predictions"]
    worst = mistakes(ev, n=5)
    assert len(worst) == 5
    losses = [r["loss"] for r in worst]
    assert losses == sorted(losses, reverse=True)
    assert losses[0] == max(r["loss"] for r in rows)
    assert all(not r["correct"] for r in mistakes(ev, n=100, wrong_only=True))

    # Every image is in exactly one cell, and each cell's count is the matrix's.
    classes = ev["classes"]
    seen = 0
    for t in range(len(classes)):
        for p in range(len(classes)):
            cell = cell_images(ev, t, p)
            assert len(cell) == ev["confusion"][t][p]
            assert all(r["label"] == t and r["pred"] == p for r in cell)
            assert [r["confidence"] for r in cell] == sorted((r["confidence"] for r in cell), reverse=True)
            seen += len(cell)
    assert seen == len(rows)
    assert cell_images(ev, "bees", "bees") == cell_images(ev, 1, 1)
    with pytest.raises(ValueError, match="wasps"):
        cell_images(ev, "wasps", "bees")

    table = per_class_table(ev)
    assert [r["class"] for r in table] == ["ants", "bees"]
    assert sum(r["support"] for r in table) == len(rows)
    fig = confusion_figure(ev)
    heat = fig.data[0]
    assert [list(r) for r in heat.z] == ev["confusion"]
    assert list(heat.customdata[1][0]) == [1, 0, ev["confusion"][1][0]]


# --- Grad-CAM ------------------------------------------------------------------------


def test_grad_cam_on_the_trained_mobilenet_points_at_the_evidence(run_dir, loaded):
    """Shape and range, a different map per class, and a deletion check: hiding
    the hottest fifth of a bee photo costs the model more confidence than
    hiding the coldest fifth."""
    ev = open_run(run_dir).evaluation
    bees = [r for r in ev["predictions"] if r["true"] == "bees" and r["correct"]][:6]
    assert len(bees) == 6
    assert explain.default_cam_layer(loaded.model) == "final_conv"

    hot_drop, cold_drop = [], []
    for i, row in enumerate(bees):
        image = open_rgb(row["path"], loaded.resize_size)
        heatmap, index, prob = explain.grad_cam(loaded, image)
        _check_heatmap(heatmap)
        assert index == row["pred"] == 1
        assert prob == pytest.approx(row["confidence"], abs=0.02)  # eval ran on cached half features
        x = loaded.transform(image)[None]

        def prob_without(mask, x=x, index=index):
            hidden = x.clone()
            hidden[:, :, torch.from_numpy(mask)] = 0.0  # the dataset's mean colour
            with torch.no_grad():
                return float(loaded.model(hidden).softmax(1)[0, index])

        hot_drop.append(prob - prob_without(heatmap >= np.quantile(heatmap, 0.8)))
        cold_drop.append(prob - prob_without(heatmap <= np.quantile(heatmap, 0.2)))
        if i == 0:
            other, other_index, other_prob = explain.grad_cam(loaded, image, target_class="ants")
            assert other_index == 0 and other_prob == pytest.approx(1 - prob, abs=1e-5)
            assert np.abs(other - heatmap).mean() > 0.05  # a different class, a different map
            view = explain.model_view(loaded, image)
            assert view.size == (224, 224)
            painted = explain.overlay(view, heatmap, alpha=0.5)
            assert painted.size == view.size and painted.mode == "RGB"
            assert np.asarray(painted).astype(int).sum() != np.asarray(view).astype(int).sum()
            # Any layer of the list works; an earlier one is a finer map of simpler things.
            early, _, _ = explain.grad_cam(loaded, image, layer="stage3")
            assert early.shape == (224, 224) and np.isfinite(early).all()
            page = explain.explain_image(run_dir, row["path"])
            assert page["class_name"] == "bees" and page["overlay"].size == (224, 224)
    assert np.mean(hot_drop) > np.mean(cold_drop) + 0.03, (hot_drop, cold_drop)
    with pytest.raises(ValueError, match="not a layer"):
        explain.grad_cam(loaded, image, layer="nonsense")


def test_grad_cam_on_efficientnet_lite0(small_data):
    torch.manual_seed(0)  # the new head's weights: the same maps on every run
    model = build_model("efficientnet_lite0", 2)  # ImageNet weights ship in a package
    image = open_rgb(sorted((small_data / "val" / "shoes").glob("*.jpg"))[0])
    assert explain.default_cam_layer(model) == "final_conv"
    maps = []
    for target in (0, 1):
        heatmap, index, prob = explain.grad_cam(model, image, target_class=target)
        _check_heatmap(heatmap)
        assert index == target and 0.0 < prob < 1.0
        maps.append(heatmap)
    assert np.abs(maps[0] - maps[1]).mean() > 0.01
    assert not any(p.grad is not None for p in model.parameters())  # no side effects on the model


def test_grad_cam_while_a_training_runs_in_another_thread(small_data, tmp_path):
    """The app explains and predicts in its page threads while a job trains in
    another. Each validation of that job folds BatchNorm into a copy of its
    blocks; that must never reach into this thread's forward passes (a
    torch.fx trace did: it patches nn.Module.__call__ for the whole process)."""
    import threading

    from core.config import TrainConfig
    from core.jobs import train_blocking

    config = TrainConfig(
        data_dir=str(small_data),
        backbone="efficientnet_lite0",
        strategy="full",
        epochs=4,
        image_size=64,
        cache_dir=str(tmp_path / "cache"),
    )
    ended = {}
    trainer = threading.Thread(
        target=lambda: ended.update(zip(("job", "run"), train_blocking(config, tmp_path / "runs")))
    )
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", 2)
    image = open_rgb(sorted((small_data / "val" / "shoes").glob("*.jpg"))[0])
    reference, _, _ = explain.grad_cam(model, image, target_class=0)
    trainer.start()
    maps = 0
    while trainer.is_alive() or maps < 3:
        heatmap, _, _ = explain.grad_cam(model, image, target_class=0)
        np.testing.assert_allclose(heatmap, reference, atol=1e-4)
        maps += 1
    trainer.join()
    assert ended["job"].snapshot()["state"] == "finished" and len(ended["run"].metrics) == 4


def test_grad_cam_on_vit_uses_the_patch_tokens(small_data):
    torch.manual_seed(0)
    model = build_model("vit_b_16", 3, init="random")
    image = open_rgb(sorted((small_data / "val" / "hat").glob("*.jpg"))[0])
    assert explain.cam_layers(model) == ["patch_embed", "stage1", "stage2", "stage3", "stage4"]
    maps = []
    for target in (0, 2):
        heatmap, index, prob = explain.grad_cam(model, image, target_class=target)
        _check_heatmap(heatmap)
        maps.append(heatmap)
    assert np.abs(maps[0] - maps[1]).mean() > 0.01
    # Why the default is the tokens going *into* the last encoder layer: the
    # head reads only the class token of its output, so the patch tokens of the
    # output get no gradient at all and Grad-CAM on them is blank.
    blank, _, _ = explain.grad_cam(model, image, target_class=0, layer="stage4:output")
    assert blank.shape == (224, 224) and float(blank.max()) == 0.0


# --- embeddings ------------------------------------------------------------------------


def test_embeddings_before_and_after_fine_tuning(run_dir, loaded, offline_weights, tmp_path):
    view = explain.embedding_view(run_dir, method="pca")
    val = open_run(run_dir).scan["val"]
    rows = view["rows"]
    assert len(rows) == 2 * len(val)
    assert {r["model"] for r in rows} == {"pretrained", "fine-tuned"}
    assert {r["true"] for r in rows} == {"ants", "bees"}
    assert all(np.isfinite([r["x"], r["y"]]).all() for r in rows)
    sep = view["separation"]
    # The classes separate in 2-D, and fine-tuning the last block does not make
    # that worse (usually better; the margin allows for one image either way).
    assert sep["fine-tuned"] >= 0.8, sep
    assert sep["fine-tuned"] >= sep["pretrained"] - 1 / len(val), sep
    assert view["note"] == ""  # last-1 changed the backbone's features

    # embeddings(): aligned with the samples, NaN for an unreadable file.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not really a jpeg")
    samples = [tuple(s) for s in val[:3] + val[-3:]] + [(str(broken), 0)]
    tuned = explain.embeddings(loaded, samples)
    before = explain.embeddings(loaded, samples, pretrained=True)
    assert tuned.shape == before.shape == (7, loaded.model.feature_dim)
    assert np.isfinite(tuned[:6]).all() and np.isnan(tuned[6]).all()
    assert not np.allclose(tuned[:6], before[:6])  # the fine-tuned block changed them

    pca = explain.project_2d(tuned, "pca")
    assert pca.shape == (7, 2) and np.isfinite(pca[:6]).all() and np.isnan(pca[6]).all()
    assert np.array_equal(pca, explain.project_2d(tuned, "pca"), equal_nan=True)
    assert pca[:6, 0].var() >= pca[:6, 1].var()  # the first component carries the most
    tsne = explain.project_2d(tuned, "tsne", seed=0)
    assert tsne.shape == (7, 2) and np.isfinite(tsne[:6]).all() and np.isnan(tsne[6]).all()
    with pytest.raises(ValueError, match="pca"):
        explain.project_2d(tuned, "umap")
    assert explain.centroid_accuracy(np.array([[0, 0], [0, 1], [5, 5], [5, 6]]), [0, 0, 1, 1]) == 1.0


def test_a_linear_probe_embedding_shows_the_heads_scores(linear_probe_run):
    """A linear probe leaves the backbone's features as they were, so its
    "after" picture is the trained head's scores, where the classes part."""
    view = explain.embedding_view(linear_probe_run, method="pca")
    assert view["after"] == "scores" and "score for each class" in view["note"]
    val = open_run(linear_probe_run).scan["val"]
    loaded = load_run_model(linear_probe_run)
    scores = explain.embeddings(loaded, val, scores=True)
    assert scores.shape == (len(val), 4)
    # The scores are the model's own predictions: the same as its forward pass.
    predicted = scores.argmax(1)
    evaluation = json.loads((linear_probe_run / "eval.json").read_text())
    assert (predicted == np.array([label for _, label in val])).mean() == pytest.approx(evaluation["accuracy"])
    # The classes part in the scores: the picture's nearest-centroid measure may
    # misplace a few pictures the head's argmax gets right (3 of 16 here), far
    # above chance (0.25).
    assert view["separation"]["fine-tuned"] >= evaluation["accuracy"] - 3 / len(val) - 1e-9, view["separation"]
