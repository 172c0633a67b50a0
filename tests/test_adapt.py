"""Domain adaptation on a shift built from real photos (darker, greyer, a
colour cast, noise: tests/shift.py): the adapted model must name at least 5
points more of the shifted pictures than the same run without adaptation,
and not through AdaBN alone (recorded beside it). The Results page says how
it adapted in words, fills every cell of its table, and warns when the
adapted model does worse on the person's own validation pictures.

Kept as a new run (`--as-new-run`, or the Results page's button), the
adapted model is a run like any other: listed with where it came from, it
predicts exactly as adapted.pt does, and exports to TorchScript and ONNX."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from core import cli
from core.adapt import ADAPTED_FILE, adapt_run, read_record, with_alignment
from core.adapted_run import ORIGIN_FILE, fold_alignment, keep_as_run, kept_run
from core.evaluation import load_run_model
from core.export import export_run
from core.images import open_rgb
from core.model_card import model_card
from core.models import HeadConfig, build_model
from core.runs import Run, RunStore
from tests.folders import PACKAGED_BACKBONE, PHOTOS
from tests.shift import shifted_copy
from tests.test_app_pages import (
    _app,
    _goto,
    _ok,
    _texts,
    every_run_goes_through_app_py,  # noqa: F401 - the page test runs app.py
)
from ui import words
from ui.adapt_view import AVERAGES_ONLY


@pytest.mark.slow
def test_self_training_gains_on_shifted_pictures(linear_probe_run, tmp_path):
    # The session's shared linear probe (trained once for many tests), copied: it stays as it was.
    run = shutil.copytree(linear_probe_run, tmp_path / linear_probe_run.name)
    target = tmp_path / "dim-room"
    for split in ("train", "val"):
        shifted_copy(PHOTOS / split, target)  # 56 pictures in class subfolders, used only to score
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["adapt", str(run), str(target), "--as-new-run"]) == 0
    record = json.loads(out.getvalue().strip().splitlines()[-1])
    new = Path(record.pop("new_run"))
    assert record == {k: v for k, v in read_record(run).items() if k != "kept_as"}
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
    _kept_run_is_the_adapted_model(run, new, model.eval(), target)
    _a_run_kept_before_says_what_is_its_own(run, new)


def _kept_run_is_the_adapted_model(run: Path, new: Path, adapted, target: Path) -> None:
    """The new run: beside the source in its runs folder, listed with where it
    came from, answering as adapted.pt does (its FeatureAlign folded into the
    head), scored on the validation pictures, and exported with it."""
    assert new.parent == run.parent and new.name.endswith("-adapted")
    listed = {r.name: r.summary() for r in RunStore(run.parent).list()}
    s = listed[new.name]
    assert s["state"] == "finished" and listed[run.name]["adapted_from"] is None
    came = s["adapted_from"]
    assert came["run"] == run.name and came["method"] == "self-training"
    assert came["target_dir"] == str(target.resolve())
    assert (new / ORIGIN_FILE).is_file() and not (new / "last.pt").exists()  # nothing to resume
    # It did not train: no curves of its own, and none of its source's notes on how that training went.
    source_status, status = json.loads((run / "status.json").read_text()), json.loads((new / "status.json").read_text())
    assert (run / "metrics.jsonl").is_file() and not (new / "metrics.jsonl").exists()
    assert source_status["feature_cache"]["used"] and "feature_cache" not in status and "decisions" not in status
    # Nor its source's epochs, time or device: it trained no epoch; its time and device are the adaptation's.
    record = read_record(run)
    assert status["epochs_done"] == 0 and "best_epoch" not in status
    assert status["seconds"] == record["seconds"] and (status["device"], record["device"]) == ("cpu", "cpu")
    assert s["epochs_done"] == 0 and s["best_epoch"] is None and s["seconds"] == record["seconds"]
    assert (came["source_epochs"], came["source_best_epoch"]) == (2, source_status["best_epoch"])
    assert kept_run(run).path == new and keep_as_run(run).path == new  # kept once
    assert read_record(run)["kept_as"] == new.name
    # The same answers as adapted.pt, through the loader every page and `predict` use.
    loaded = load_run_model(new)
    assert all("FeatureAlign" not in type(m).__name__ for m in loaded.model.modules())  # a trained run's layout
    pictures = sorted(target.rglob("*.jpg"))
    x = torch.stack([loaded.transform(open_rgb(p, max_side=loaded.resize_size)) for p in pictures])
    with torch.no_grad():
        ours, theirs = loaded.model(x).softmax(1), adapted(x).softmax(1)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    evaluation = json.loads((new / "eval.json").read_text())
    n = evaluation["count"]
    assert n == came["source"]["n"] and abs(evaluation["accuracy"] - came["source"]["after"]) <= 1 / n + 1e-9
    assert s["best_val_accuracy"] == evaluation["accuracy"]
    # Exported, TorchScript and ONNX agree with the app's model (export_run checks them on val pictures).
    with zipfile.ZipFile(export_run(new)) as zf:
        names = set(zf.namelist())
        card = zf.read(f"{new.name}/MODEL_CARD.md").decode()
        checks = json.loads(zf.read(f"{new.name}/export_check.json"))
    assert {f"{new.name}/model.ts", f"{new.name}/model.onnx"} <= names
    assert "## Adapted to new pictures" in card and f"Adapted from the run {run.name}, which trained 2 epochs" in card
    assert f"| epochs | none: adapted from the run {run.name}, which trained 2 epochs (best: epoch " in card
    assert f"| adapting time | {record['seconds']:.0f} s |" in card and "| adapted on | CPU (" in card
    assert "done of" not in card and "training time" not in card, card
    # Its blocks and trained numbers are its source's training; what adapting changed is said apart.
    assert "- Trainable parameters (in the run it was adapted from): 5,124 of " in card, card
    assert "| block | parameters | during the training of the run it was adapted from |" in card
    assert (
        "- What adapting changed: Only the new head changed (5,124 numbers): a scale and a shift for each of the 1,280 features"
        in card
    )
    assert checks, checks


def _a_run_kept_before_says_what_is_its_own(run: Path, new: Path) -> None:
    """A run kept before its own epochs, time and device were stored holds
    its source's epochs and device, and the source's training time plus the
    adaptation's: it is shown with no epochs, the adaptation's time, the
    source's epochs as the source's, and where it adapted as not known."""
    old = shutil.copytree(new, new.parent / "20000101-000000-efficientnet_lite0-adapted")
    source, status = Run(run).status, Run(old).status
    came = {k: v for k, v in status["adapted_from"].items() if not k.startswith("source_")}
    copied = {k: source[k] for k in ("epochs_done", "best_epoch", "device", "device_name")}
    Run(old).update_status(**copied, seconds=source["seconds"] + status["seconds"], adapted_from=came)
    s = Run(old).summary()
    assert (s["epochs_done"], s["best_epoch"], s["device"]) == (0, None, None), s
    assert s["seconds"] == read_record(run)["seconds"]  # from adapted_from.json's copy of adapt.json
    assert (s["adapted_from"]["source_epochs"], s["adapted_from"]["source_best_epoch"]) == (2, source["best_epoch"])
    card = model_card(load_run_model(old), old)
    assert f"none: adapted from the run {run.name}, which trained 2 epochs" in card
    assert "| adapted on | not recorded |" in card and f"| adapting time | {s['seconds']:.0f} s |" in card


@pytest.mark.parametrize("head", [HeadConfig(), HeadConfig(dropout=0.3), HeadConfig(hidden=16, dropout=0.2)])
def test_the_alignment_folds_into_every_plain_head(head):
    """x*s + b then the head's first Linear is one Linear: the kept run's
    best.pt has a trained run's layout and answers as the aligned model."""
    torch.manual_seed(0)
    model = with_alignment(build_model(PACKAGED_BACKBONE, 3, init="random", head=head)).eval()
    align = model.blocks["head"][0]
    align.scale.uniform_(0.2, 5.0)
    align.shift.normal_(0.0, 2.0)
    features = torch.randn(8, model.feature_dim)
    with torch.no_grad():
        aligned = model.blocks["head"](features)
        folded = fold_alignment(model).blocks["head"](features)
    plain = build_model(PACKAGED_BACKBONE, 3, init="random", head=head)
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert torch.allclose(aligned, folded, atol=1e-4), (aligned - folded).abs().max()


# --- the Results page's view of it --------------------------------------------------------


def _adapt_table(at):
    return next(d.value for d in at.dataframe if "Adapted" in d.value.columns)


def test_results_page_says_how_it_adapted_in_words_and_warns_when_it_got_worse(env, with_run, tmp_path):
    target = shifted_copy(PHOTOS / "val", tmp_path / "dim-room")  # 16 labelled pictures, used only to score
    at = _goto(_app(), "pages/6_results.py")
    at.text_input(key="adapt_folder").set_value(str(target)).run()
    for method in ("adabn", "self-training"):
        at.selectbox(key="adapt_method").set_value(method).run()
        at.button(key="adapt_go").click().run()
        _ok(at)
        record = read_record(with_run)
        assert record["method"] == method
        shown = _texts(at.markdown)
        assert "(adabn," not in shown and f"({method}," not in shown  # the method in words, not its code name
        assert f"Adapted to **16** pictures from `{target}` by " in shown
        table = _adapt_table(at)
        assert len(table) == 2 and table.isin(["", "–"]).sum().sum() == 0, table  # no cell left empty
        # What AdaBN alone gave: a column of its own after self-training; after AdaBN it is the result itself.
        assert (AVERAGES_ONLY in table.columns) == (method == "self-training")
        s = record["source"]
        worse = "did worse on your own checking pictures" in _texts(at.warning)
        assert worse == (s["after"] < s["before"]), record
        # AdaBN under a frozen backbone forgets much of the clothes (measured: 94% -> 44% of them right).
        assert worse or method != "adabn", record
        if worse:
            assert "Keep the earlier model" in _texts(at.warning)
        # The middle column is said in words, and where it did better, how to keep that model.
        assert (f"**{AVERAGES_ONLY}**: what the first step" in _texts(at.caption)) == (method == "self-training")
        t = record["target"]
        better = method == "self-training" and t["adabn"] > t["after"]
        assert ("Re-measuring the averages alone did better" in _texts(at.warning)) == better, record


def test_results_page_keeps_the_adapted_model_as_a_new_run(env, with_run, tmp_path):
    target = shifted_copy(PHOTOS / "val", tmp_path / "dim-room")
    at = _goto(_app(), "pages/6_results.py")
    at.text_input(key="adapt_folder").set_value(str(target)).run()
    assert "adapt_keep" not in [b.key for b in at.button]  # nothing adapted yet, nothing to keep
    at.selectbox(key="adapt_method").set_value("self-training").run()
    at.button(key="adapt_go").click().run()
    _ok(at)
    at.button(key="adapt_keep").click().run()
    _ok(at)
    kept = kept_run(with_run)
    assert kept is not None and kept.path.parent == with_run.parent, _texts(at.error)
    assert f"kept as the run **{words.md_text(kept.name)}**" in _texts(at.success)
    assert "adapt_keep" not in [b.key for b in at.button]  # kept once: the button gives way to the run
    links = _links(at)
    assert ("playground", f"run={kept.name}") in links and ("results", f"run={kept.name}") in links, links
    labels = [e.proto.label for e in at.get("page_link")]
    assert "Try the adapted model" in labels, labels  # told apart from the page's own "Try it on new pictures"
    # The new run opens on the Results page like any run, saying where it came from, and in the Playground.
    at.query_params["run"] = kept.name
    at.run()
    _ok(at)
    assert at.selectbox(key="results_run").value == kept.name
    came = f"Adapted from the run **{words.md_text(with_run.name)}**, which trained 2 epochs, to the 16 pictures in"
    assert came in _texts(at.info)  # the sentence the Runs page and the model card say too
    assert ("results", f"run={with_run.name}") in _links(at)  # the run it came from, a click away
    assert "Fast path" not in _texts(at.caption)  # the source's stored features did not make this run fast
    at.query_params["run"] = with_run.name
    at.run()
    assert "Fast path" in _texts(at.caption)  # they made the source's training fast, and its page says so
    at.query_params["run"] = kept.name
    at.run()
    at = _goto(at, "pages/4_playground.py")
    assert at.selectbox(key="play_run").value == kept.name
    at = _goto(at, "pages/5_runs.py")  # listed, marked as adapted, and its page says from what
    table = next(d.value for d in at.dataframe if "Run" in d.value.columns)
    row = table[table["Run"] == kept.name]
    assert list(row["What learned"]) == ["Adapted · Only the new last layer learns (linear probe)"], row
    took = words.fmt_duration(read_record(with_run)["seconds"])  # the adaptation's time, not its source's plus it
    assert (list(row["Status"]), list(row["Time"])) == (["finished"], [took]), row  # not "finished, 0 of 2 epochs"
    at.selectbox(key="open_run").set_value(kept.name).run()
    assert came in _texts(at.info)
    told = _texts(at.markdown)  # its settings: what learned is its source's, what adapting changed its own
    assert "**Numbers that learned (in the run it was adapted from):** 5,124 of " in told, told
    assert "**What adapting changed:** Only the new head changed (5,124 numbers)" in told, told
    assert "by learning from them without their labels (self-training)" in _texts(at.info)
    # No training curves: it did not train; the run that did is a link away, its accuracy beside this one's.
    assert not at.get("plotly_chart") and "It did not train" in _texts(at.caption)
    assert ("runs", f"run={with_run.name}") in _links(at)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Before adapting"] == words.fmt_pct(kept.status["adapted_from"]["source"]["before"]), shown
    assert "Best epoch" not in shown and shown["Adapting time"] == words.fmt_duration(kept.status["seconds"]), shown
    assert "Adapted on CPU (" in _texts(at.caption)
    at = _goto(at, "pages/7_compare.py")
    at.multiselect(key="compare_runs").set_value([with_run.name, kept.name]).run()
    _ok(at)
    board = at.dataframe[0].value
    assert "Adapted · Only the new last layer learns" in set(board["What learned"]), board
    assert set(board["Training"]) == {
        words.fmt_duration(s) for s in (Run(with_run).status["seconds"], kept.status["seconds"])
    }
    picker = at.multiselect(key="compare_runs")
    assert "adapted to new pictures" in picker.format_func(kept.name), picker.format_func(kept.name)


def test_a_model_kept_after_adabn_says_it_learned_nothing_and_whose_training_its_blocks_show(env, with_run, tmp_path):
    """AdaBN re-measures BatchNorm statistics and learns no weight: the kept
    run's model card and Runs page say so, counting the layers it re-measured,
    and give the blocks table and trained numbers as its source's training's;
    a run kept before those counts were stored is counted from its model."""
    adapt_run(with_run, shifted_copy(PHOTOS / "val", tmp_path / "dim-room"), method="adabn")
    layers = read_record(with_run)["batchnorm_layers"]
    kept = keep_as_run(with_run)
    changed = kept.status["adapted_from"]["changed"]
    assert changed["batchnorm_layers"] == layers > 0 and changed["batchnorm_statistics"] > 2 * layers
    card = model_card(load_run_model(kept.path), kept.path)
    said = (
        "- What adapting changed: It learned nothing: it re-measured on the new pictures the averages the network "
        f"keeps of what it sees (the running mean and variance of its {layers} BatchNorm layers, "
        f"{changed['batchnorm_statistics']:,} numbers). Every weight is as the run it was adapted from trained it."
    )
    assert said in card, card
    assert "- Trainable parameters (in the run it was adapted from): 5,124 of " in card
    assert "- Trained blocks (in the run it was adapted from): New head." in card
    assert "| New head (`head`) | 5,124 | trained | 1x |" in card  # under its source's training's heading
    assert "| block | parameters | during the training of the run it was adapted from |" in card
    older = {k: v for k, v in kept.status["adapted_from"].items() if k != "changed"}
    kept.update_status(adapted_from=older)
    assert said in model_card(load_run_model(kept.path), kept.path)  # counted from the model
    at = _goto(_app(), "pages/5_runs.py")
    at.selectbox(key="open_run").set_value(kept.name).run()
    _ok(at)
    told = _texts(at.markdown)
    assert "**What learned (in the run it was adapted from):**" in told, told
    assert "**Numbers that learned (in the run it was adapted from):** 5,124 of " in told
    assert "**What adapting changed:** It learned nothing: it re-measured on the new pictures" in told


def _links(at) -> list[tuple[str, str]]:
    """(page, query) of every page link on the page."""
    return [(e.proto.page, e.proto.query_string) for e in at.get("page_link")]


def test_where_the_averages_alone_did_better_the_page_says_how_to_keep_that_model():
    from ui.adapt_view import averages_did_better

    record = {"method": "self-training", "target": {"adabn": 0.938, "after": 0.875}}
    [said] = averages_did_better(record)
    assert "did better on the new pictures (93.8% right, against 87.5%" in said and "AdaBN" in said
    assert averages_did_better({"method": "self-training", "target": {"adabn": 0.8, "after": 0.9}}) == []
    assert averages_did_better({"method": "adabn", "target": {"adabn": 0.9, "after": 0.9}}) == []
    assert averages_did_better({"method": "self-training", "target": {"adabn": None, "after": None}}) == []
