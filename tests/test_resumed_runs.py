"""Resumed and damaged runs, as a person meets them.

1. A resumed run's per-batch loss line covers the whole run, not only the
   epochs after the resume: the points are kept in the run's
   batch_losses.json, each finished epoch's, and a resume starts from them
   (the Job, the follower and the Runs page's chart alike). The file stays
   small however long the run (neighbours averaged past a bound).
2. "Check it again" (a finished run's lost eval.json made anew from best.pt)
   runs where a training would (a GPU when there is one) and counts the
   pictures it has done, for the Runs page's progress bar.
3. A run whose eval.json is there but cannot be shown (cut off, or whole
   JSON whose confusion matrix, predictions or scores do not fit its
   classes) reads as damaged; the Runs page offers no "See the results" for
   it, only what works ("Check it again"), and the Results page, reached by
   a bookmark, says what is wrong and what to do, with no "Something went
   wrong"; a bookmark to a finished run whose eval.json is gone says so,
   not that the run was deleted.

Real runs: the session's EfficientNet-Lite0 linear probe on the repository's
photos (packaged weights, on the CPU), copied and resumed here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from core import follow
from core.devices import pick_device
from core.final_evaluation import check_again
from core.jobs import resume_blocking
from core.progress import LOSS_FILE, MAX_LOSS_POINTS, LossCurve
from core.resume import prepare_resume
from core.runs import open_run
from tests.test_app_pages import (
    _app,
    _goto,
    _ok,
    _texts,
    every_run_goes_through_app_py,  # noqa: F401 - the page test runs app.py
)

RUNS, RESULTS = "pages/5_runs.py", "pages/6_results.py"
BATCH_LINE = "train (each batch)"


def _batch_line(at) -> list[float]:
    """The x values (epochs) of the Runs page's per-batch loss line."""
    for chart in at.get("plotly_chart"):
        for trace in json.loads(chart.proto.spec)["data"]:
            if trace.get("name") == BATCH_LINE:
                return trace["x"]
    return []


def test_a_resumed_runs_batch_loss_line_covers_the_whole_run(env, linear_probe_run):
    run_dir = shutil.copytree(linear_probe_run, env / "runs" / "resumed")
    saved = open_run(run_dir).batch_losses
    steps, before = saved.steps_per_epoch, saved.points
    assert steps and before and before[0][0] <= steps, "the two epochs' points are kept in the run folder"
    old = shutil.copytree(linear_probe_run, env / "runs" / "older")
    (old / LOSS_FILE).unlink()  # a run made before the file was kept

    job, run = resume_blocking(prepare_resume(run_dir, epochs=3))
    assert job.snapshot()["state"] == "finished", job.snapshot()["reason"]
    assert len(run.metrics) == 3
    live = job.snapshot()["batch_losses"]
    assert live[: len(before)] == before, "the Job's curve starts at epoch 1, not at the resume"
    assert max(s for s, _ in live) == 3 * steps
    assert run.batch_losses.points == live and run.batch_losses.steps_per_epoch == steps, "and so does the file"
    assert follow.snapshot(run_dir)["batch_losses"] == live  # a follower from the folder alone

    job, old_run = resume_blocking(prepare_resume(old, epochs=3))
    assert job.snapshot()["state"] == "finished", job.snapshot()["reason"]
    kept = old_run.batch_losses.points
    assert kept and min(s for s, _ in kept) > 2 * steps  # only the epoch trained since: no line before it

    at = _goto(_app(), RUNS)
    at.selectbox(key="open_run").set_value("resumed").run()
    _ok(at)
    x = _batch_line(at)
    assert x and min(x) <= 1 and max(x) == 3, x  # from the first epoch to the last
    at.selectbox(key="open_run").set_value("older").run()
    _ok(at)
    assert min(_batch_line(at)) > 2


def test_the_loss_curve_stays_small_however_long_the_run():
    curve = LossCurve()
    for step in range(1, 50_001):
        curve.add(step, 1.0 + step % 2)
    points = curve.points
    assert MAX_LOSS_POINTS // 2 <= len(points) < MAX_LOSS_POINTS
    assert points[0][0] < 50 and points[-1][0] > 49_950  # the whole run, from its start to its end
    gaps = [b[0] - a[0] for a, b in zip(points, points[1:])]
    assert min(gaps) == max(gaps) == curve.per_point  # the same resolution all along
    assert {loss for _, loss in points} == {1.5}  # neighbours averaged, not dropped


def test_check_it_again_counts_its_pictures_on_the_apps_device(tmp_path, linear_probe_run):
    run_dir = shutil.copytree(linear_probe_run, tmp_path / "eval-gone")
    whole = json.loads((run_dir / "eval.json").read_text())
    (run_dir / "eval.json").unlink()
    seen: list[tuple[int, int]] = []
    result = check_again(run_dir, on_progress=lambda done, total: seen.append((done, total)))
    assert result["device"] == str(pick_device("auto"))  # a GPU when there is one, as a training would use
    total = len(whole["predictions"])
    assert seen[0] == (0, total) and seen[-1] == (total, total), seen
    assert len(seen) >= 3 and seen == sorted(seen), seen  # batch by batch, from before the first
    assert open_run(run_dir).evaluation["confusion"] == whole["confusion"]


def _spoilt_results(runs: Path, trained: Path) -> dict[str, str]:
    """Copies of a finished run with its eval.json spoilt, and what each one's reason says."""
    whole = json.loads((trained / "eval.json").read_text())
    spoil = {
        "cut-off": ('{"accuracy": 0.9', "eval.json is cut off or not JSON"),
        "too-small": (
            json.dumps({**whole, "confusion": [[1, 0], [0, 1]]}),
            "eval.json's confusion is not 4 by 4",
        ),
        "not-a-share": (json.dumps({**whole, "accuracy": float("nan")}), "eval.json's accuracy is NaN, not a share"),
        "class-nine": (
            json.dumps({**whole, "predictions": [{**p, "pred": 9} for p in whole["predictions"]]}),
            "eval.json's predictions name class numbers outside its 4 classes",
        ),
        "no-rows": (json.dumps({**whole, "per_class": []}), "eval.json's per_class has 0 rows for its 4 classes"),
    }
    for name, (text, _) in spoil.items():
        (shutil.copytree(trained, runs / name) / "eval.json").write_text(text)
    return {name: reason for name, (_, reason) in spoil.items()}


def _links(at) -> list[str]:
    return [link.label for link in at.get("page_link")]


def test_a_run_whose_results_cannot_be_shown_offers_no_link_to_them(env, linear_probe_run):
    reasons = _spoilt_results(env / "runs", linear_probe_run)
    shutil.copytree(linear_probe_run, env / "runs" / "good")
    (shutil.copytree(linear_probe_run, env / "runs" / "results-gone") / "eval.json").unlink()
    for name, reason in reasons.items():
        run = open_run(env / "runs" / name)
        assert run.state == "damaged" and reason in run.summary()["reason"], (name, run.problems)
        assert run.can_check_again and run.evaluation is None, name

    at = _goto(_app(), RUNS)
    for name in [*reasons, "results-gone", "good"]:
        at.selectbox(key="open_run").set_value(name).run()
        _ok(at)
        has_results = "See the results" in _links(at)
        assert has_results == (name == "good"), (name, _links(at))
        assert ("Check it again" in [b.label for b in at.button]) == (name != "good"), name
        assert "Try it in the Playground" in _links(at), name  # its model is whole

    for name, reason in reasons.items():  # a bookmark to the Results page
        at = _app()
        at.query_params["run"] = name
        _goto(at, RESULTS)
        # Left out of the picker (its results cannot be shown): a note says why, and the way to mend it.
        note = _texts(at.info)
        assert reason in note and "Check it again" in note, (name, note)
        assert "Open it on the Runs page" in _links(at), name
    at = _app()
    at.query_params["run"] = "results-gone"
    _goto(at, RESULTS)
    note = _texts(at.info)
    assert "results (eval.json) are missing" in note and "Check it again" in note, note
    assert "not in the runs folder" not in note and "not finished" not in note, note
    assert at.selectbox(key="results_run").value == "good"  # and the results of a run that has them
