"""Run files that read as whole JSON but hold the wrong kind of value (a hand
edit, another program): "epochs": "ten", "lr": null, a list where the
network's name goes, numbers as text in status.json, a classes.json that does
not name the classes the run trained on, an eval.json or a metrics.jsonl row
of the wrong shape, a kept adapted model's "adapted_from" edited by hand, a
finished run whose best.pt is gone.

Each such run is listed as damaged with the reason in words; every other run
keeps its label (the settings that tell alike runs apart), its row in
Compare and its pages; no page shows a traceback or "Something went wrong".

Real runs: the session's EfficientNet-Lite0 linear probe on the repository's
photos (packaged weights, so it runs anywhere), copied and damaged here, and
the same run adapted (AdaBN) and kept as a new run through the command line.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from core import cli
from core.adapted_run import card_lines, origin_words
from core.compare import curves, leaderboard
from core.evaluation import load_run_model
from core.model_card import model_card
from core.resume import prepare_resume, restore_run
from core.runs import RunStore, open_run
from tests.test_app_pages import (
    _app,
    _button,
    _goto,
    _ok,
    _texts,
    every_run_goes_through_app_py,  # noqa: F401 - the page test runs app.py
)
from ui import words

RUNS, RESULTS, PLAYGROUND, COMPARE = (
    "pages/5_runs.py",
    "pages/6_results.py",
    "pages/4_playground.py",
    "pages/7_compare.py",
)


@pytest.fixture(scope="session")
def kept_adapted(linear_probe_run, small_data, tmp_path_factory) -> Path:
    """The linear probe adapted (AdaBN) to its own validation pictures and kept as a new run, beside a copy of it."""
    runs = tmp_path_factory.mktemp("adapted") / "runs"
    source = shutil.copytree(linear_probe_run, runs / linear_probe_run.name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["adapt", str(source), str(small_data / "val"), "--adapt-method", "adabn", "--as-new-run"])
    assert code == 0
    return Path(json.loads(out.getvalue().strip().splitlines()[-1])["new_run"])


def _edit(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _damaged_copies(runs: Path, trained: Path, adapted: Path) -> dict[str, Path]:
    """Good runs (two with the same settings, the kept adapted one) and copies damaged by hand."""
    made = {"good": shutil.copytree(trained, runs / "2026-01-good"), "same": shutil.copytree(trained, runs / "2026-02")}
    made["adapted"] = shutil.copytree(adapted, runs / adapted.name)
    for i, name in enumerate(
        [
            "backbone-list",
            "epochs-ten",
            "lr-null",
            "accuracy",
            "no-classes",
            "status-text",
            "created-huge",
            "classes",
            "no-best",
            "eval",
            "metrics",
        ]
    ):
        made[name] = shutil.copytree(trained, runs / f"2026-{i + 3:02d}-{name}")
    for name in ("adapted-x", "adapted-odd"):
        made[name] = shutil.copytree(adapted, runs / f"{adapted.name}-{name}")
    _edit(made["backbone-list"] / "config.json", backbone=["efficientnet_lite0"], data_dir=["x"])
    _edit(made["epochs-ten"] / "config.json", epochs="ten")
    _edit(made["lr-null"] / "config.json", lr=None)
    _edit(made["status-text"] / "status.json", best_val_accuracy="high", epochs_done="two", feature_cache="yes")
    _edit(made["created-huge"] / "status.json", created=1e20)
    _edit(made["accuracy"] / "status.json", best_val_accuracy=7.5)
    (made["classes"] / "classes.json").write_text('["hat", "pants", "wasps"]')
    (made["no-best"] / "best.pt").unlink()
    (made["no-classes"] / "classes.json").unlink()
    _edit(made["eval"] / "eval.json", per_class="x", accuracy="high")
    (made["metrics"] / "metrics.jsonl").write_text('{"epoch": 1, "val_accuracy": "x", "train_loss": null}\n')
    _edit(made["adapted-x"] / "status.json", adapted_from="x")
    came = json.loads((adapted / "status.json").read_text())["adapted_from"]
    _edit(made["adapted-odd"] / "status.json", adapted_from={**came, "source": "x", "method": ["adabn"]})
    return made


REASONS = {
    "backbone-list": 'config.json\'s backbone is ["efficientnet_lite0"], not text',
    "epochs-ten": 'config.json\'s epochs is "ten", not a whole number',
    "lr-null": "config.json's lr is null, not a number",
    "status-text": 'status.json\'s best_val_accuracy is "high", not a number',
    "accuracy": "status.json's best_val_accuracy is 7.5, more than 1",
    "classes": "classes.json names 3 classes (hat, pants, wasps), but the run trained on 4",
    "no-classes": "classes.json (its class names) is missing",
    "no-best": "best.pt (its trained model) is missing",
    "eval": 'eval.json\'s accuracy is "high", not a number',
    "metrics": "metrics.jsonl line 1 has no number for train_loss, val_loss, train_accuracy, val_accuracy",
    "adapted-x": 'status.json\'s adapted_from is "x", not an object',
    "adapted-odd": "status.json's adapted_from's method is [\"adabn\"], not text",
}


def test_values_of_the_wrong_kind_read_as_damaged_and_never_break_the_others(tmp_path, linear_probe_run, kept_adapted):
    made = _damaged_copies(tmp_path / "runs", linear_probe_run, kept_adapted)
    runs = RunStore(tmp_path / "runs").list()
    by_path = {r.path: r for r in runs}
    summaries = {name: by_path[path].summary() for name, path in made.items()}
    for name, reason in REASONS.items():
        assert summaries[name]["state"] == "damaged", (name, summaries[name]["reason"])
        assert reason in summaries[name]["reason"], (name, summaries[name]["reason"])
    for name in ("good", "same", "adapted", "created-huge"):  # a moment past what a clock can say is only unknown
        assert summaries[name]["state"] == "finished" and summaries[name]["reason"] is None, name
    # Text stays text and numbers numbers in the summary, whatever the file holds.
    assert summaries["backbone-list"]["backbone"] is None and summaries["backbone-list"]["data"] is None
    assert summaries["status-text"]["best_val_accuracy"] is None and summaries["status-text"]["epochs_done"] == 0
    assert summaries["epochs-ten"]["epochs"] is None

    # Every label, legend and runs-table cell is made, one list for all runs; alike runs are still told apart.
    labels, legends, told = words.run_labels(runs), words.run_legends(runs), words.run_differences(runs)
    assert len(set(labels.values())) == len(runs) and len(legends) == len(runs)
    assert "–" in words.run_label(by_path[made["created-huge"]])
    assert all(" · damaged · " in labels[made[name].name] for name in REASONS), labels  # no figure it cannot back
    assert " · damaged" not in labels[made["good"].name] and "%" in labels[made["good"].name]
    assert told[made["good"].name] == told[made["same"].name]  # the same settings: nothing to tell
    assert words.what_learned(summaries["adapted"]["strategy"], True).startswith(words.ADAPTED_FIRST)

    # The pages' reads: a damaged eval.json or model is not read as whole.
    assert open_run(made["eval"]).evaluation is None and open_run(made["good"]).evaluation is not None
    assert "classes.json" in open_run(made["classes"]).model_problem and open_run(made["no-best"]).model_problem
    assert (
        open_run(made["good"]).model_problem is None is open_run(made["no-classes"]).model_problem
        and open_run(made["metrics"]).metrics == []
    )
    # A hand-edited adapted_from: its sentence and the model card's section still read, the odd entries unknown.
    came = summaries["adapted-odd"]["adapted_from"]
    assert "source" not in came and "method" not in came and came["run"] == linear_probe_run.name
    assert origin_words(came).startswith(f"Adapted from the run {linear_probe_run.name}")
    assert card_lines(json.loads((made["adapted-odd"] / "status.json").read_text()))
    # The model card of a run whose status.json holds text for numbers says them as unknown.
    card = model_card(load_run_model(made["status-text"]), made["status-text"])
    assert "| epochs | 0 done of 2 (best: epoch 2) |" in card  # "two" is no number of epochs

    board = leaderboard([r.path for r in runs], measure_speed=False)
    assert {r["run"]: r["state"] for r in board}[made["good"].name] == "finished" and len(board) == len(runs)
    assert made["good"].name in {r["run"] for r in curves([r.path for r in runs])}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == len(runs) and sum(" damaged " in line for line in lines) == len(REASONS)


def test_a_config_with_values_of_the_wrong_kind_resumes_with_its_last_checkpoints_settings(tmp_path, linear_probe_run):
    run_dir = shutil.copytree(linear_probe_run, tmp_path / "runs" / "lr-null")
    saved = json.loads((run_dir / "config.json").read_text())
    _edit(run_dir / "config.json", lr=None, epochs="ten")
    plan = prepare_resume(run_dir, epochs=3)
    try:
        assert plan.config.lr == saved["lr"] and plan.config.epochs == 3  # last.pt's settings, not null and "ten"
    finally:
        restore_run(plan.run, plan.before, "the test ends here.")
        plan.lock.release()


def test_every_page_shows_a_damaged_run_as_damaged_and_the_others_still_work(env, linear_probe_run, kept_adapted):
    made = _damaged_copies(env / "runs", linear_probe_run, kept_adapted)
    at = _app()
    # Offered only where they show something: a damaged eval.json is left out of Results' picker, a model that
    # cannot load out of the Playground's, each with a caption that says so (the Runs page says what is wrong).
    left_out = {RESULTS: ("eval", "results file (eval.json) is damaged"), PLAYGROUND: ("classes", "saved model cannot")}
    # The Runs table gives a damaged run no accuracy (status.json's 7.5 would read 750%).
    (table,) = [d for d in _goto(at, RUNS).dataframe if "Accuracy" in d.value.columns]
    accuracy = dict(zip(table.value["Run"], table.value["Accuracy"]))
    assert pd.isna(accuracy[made["accuracy"].name]) and accuracy[made["good"].name] > 0, accuracy
    for page, key in ((RUNS, "open_run"), (RESULTS, "results_run"), (PLAYGROUND, "play_run")):
        _goto(at, page)
        picker = at.selectbox(key=key)
        assert sum(" · damaged · " in label for label in picker.options) >= 4, picker.options  # no figure
        if page in left_out:
            gone, why = left_out[page]
            assert picker.format_func(made[gone].name) is None, picker.options  # not among the labels offered
            assert f"1 run left out of this list: its {why}" in _texts(at.caption), _texts(at.caption)
        for name in ("backbone-list", "eval", "classes", "adapted-odd", "status-text", "good", "adapted"):
            if page in left_out and name == left_out[page][0]:
                continue
            at.selectbox(key=key).set_value(made[name].name).run()
            _ok(at)
            errors = _texts(at.error)
            if name in REASONS:
                assert REASONS[name] in errors, (page, name, errors)
            else:
                assert not errors, (page, name, errors)
    at.selectbox(key="play_run").set_value(made["no-classes"].name).run()  # still on the Playground
    assert "This model knows 4 classes" in _texts(at.caption)  # its checkpoint's
    # A link or bookmark to a run left out: why it is not there, and the way to it on the Runs page.
    at.query_params["run"] = made["classes"].name
    at.run()
    _ok(at)
    assert f"cannot be tried here: {REASONS['classes']}" in _texts(at.error), _texts(at.error)
    _goto(at, RESULTS)
    at.query_params["run"] = made["eval"].name
    at.run()
    _ok(at)
    assert REASONS["eval"] in _texts(at.info), _texts(at.info)  # "has no results: Damaged: ..."
    _goto(at, COMPARE)
    at.multiselect(key="compare_runs").set_value([made["good"].name, made["eval"].name]).run()
    _ok(at)
    assert REASONS["eval"] in _texts(at.error)
    assert made["good"].name not in _texts(at.error)


def test_a_finished_run_whose_results_or_class_names_are_lost_is_checked_again_not_resumed(env, linear_probe_run):
    """eval.json cut off, classes.json deleted or naming other classes, eval.json deleted: resuming a
    finished run trains no epoch and never writes classes.json, so the Runs page offers "Check it again"
    (best.pt scored again on the run's validation pictures), never Resume; afterwards the run is whole,
    with the same results as before."""
    whole = json.loads((linear_probe_run / "eval.json").read_text())
    damage = {
        "eval-cut": lambda run: (run / "eval.json").write_text('{"accuracy": 0.9'),
        "classes-gone": lambda run: (run / "classes.json").unlink(),
        "classes-other": lambda run: (run / "classes.json").write_text('["cat", "dog"]'),
        "eval-gone": lambda run: (run / "eval.json").unlink(),
    }
    for name, spoil in damage.items():
        spoil(shutil.copytree(linear_probe_run, env / "runs" / name))
    at = _goto(_app(), RUNS)
    for name in damage:
        at.selectbox(key="open_run").set_value(name).run()
        _ok(at)
        run = open_run(env / "runs" / name)
        assert run.can_check_again, name
        if name == "eval-gone":  # a finished run, not damaged: only its results are missing
            assert "results (eval.json) are missing" in _texts(at.info), name
        else:
            assert "check it again on its validation pictures" in _texts(at.error), (name, _texts(at.error))
            assert "resume" not in _texts(at.error).lower(), name
        assert "Resume" not in [b.label for b in at.button], name
        _button(at, "Check it again").click().run()
        _ok(at)
        assert "Its results are whole again." in _texts(at.success), name
        run = open_run(env / "runs" / name)
        assert run.state == "finished" and not run.problems and not run.can_check_again, (name, run.problems)
        assert run.classes == whole["classes"] and run.evaluation["confusion"] == whole["confusion"], name
        assert "Check it again" not in [b.label for b in at.button], name
    assert not open_run(linear_probe_run).can_check_again  # a whole run has nothing to check again
