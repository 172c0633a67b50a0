"""Life from the first second: a real training (EfficientNet-Lite0 on the 56
test photos, on the CPU) reports every step as it goes: the scan picture by
picture, the feature pass batch by batch, the epochs batch by batch with loss points from the
first batches, and the final evaluation; and a stop before the first epoch
ends says there is nothing to resume."""

from __future__ import annotations

from core.config import TrainConfig
from core.jobs import Job, phase_progress, run_job
from core.loading import batch_chunks
from core.runs import RunStore, open_run, prepare_run
from core.training import READING
from core.training_data import FEATURE_PASS

PACKAGED = "efficientnet_lite0"


class WatchedJob(Job):
    """A real Job that also keeps what a page would have seen at each of the
    training's phase reports (a copy of its snapshot)."""

    def __init__(self, *args, stop_at_first_batch: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[dict] = []
        self.batch_reports: list[tuple[int, float, bool]] = []  # (epoch, time left, whether a floor)
        self.learning: dict[int, str | None] = {}  # epoch -> what the Train page says learns now
        self._stop_at_first_batch = stop_at_first_batch

    def update(self, **changes) -> None:
        super().update(**changes)
        if "eta_at_least" in changes:  # a batch of the epochs reports its time left
            snap = self.snapshot()
            self.batch_reports.append((snap["epoch"], snap["eta_seconds"], snap["eta_at_least"]))
        if "learning_now" in changes:
            self.learning[changes["epoch"]] = changes["learning_now"]

    def phase(self, name: str, done: int, total: int) -> None:
        super().phase(name, done, total)
        self.seen.append(self.snapshot())
        if self._stop_at_first_batch and done:
            self.request_stop()


def _run(tmp_path, data, stop: bool = False, **settings) -> WatchedJob:
    config = TrainConfig(
        **{
            "data_dir": str(data),
            "backbone": PACKAGED,
            "strategy": "linear",
            "epochs": 2,
            "device": "cpu",
            "image_size": 128,  # small pictures: a quick run on a busy machine
            "cache_dir": str(tmp_path / "cache"),  # nothing stored yet: the feature pass runs
            **settings,
        }
    )
    run, lock = prepare_run(config, RunStore(tmp_path / "runs"))
    job = WatchedJob(config, run_dir=str(run.path), lock=lock, stop_at_first_batch=stop)
    run_job(job)
    return job


def test_every_step_reports_from_its_first_batch(tmp_path, small_data):
    job = _run(tmp_path, small_data)
    snap = job.snapshot()
    assert snap["state"] == "finished", snap["reason"]

    # The scan checks the 56 pictures one by one, then the feature pass goes
    # through them batch by batch, all before the first epoch.
    names = [s["counted"]["name"] for s in job.seen]
    assert names.index(FEATURE_PASS) > max(i for i, name in enumerate(names) if name == READING)
    reading = [s["counted"]["done"] for s in job.seen if s["counted"]["name"] == READING]
    assert reading[-1] == 56 and len(reading) >= 10 and reading == sorted(reading)

    features = [s for s in job.seen if s["counted"]["name"] == FEATURE_PASS]
    counts = [s["counted"]["done"] for s in features]
    assert counts[0] == 0 and counts[-1] == 56, counts
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    between = [c for c in counts if 0 < c < 56]
    assert len(between) >= 2, f"only {counts}: the first batches should be small"
    assert all(s["epoch"] == 0 and s["history"] == [] for s in features)
    assert all(s["phase"] == FEATURE_PASS and s["counted"]["total"] == 56 for s in features)
    # From the first batch on, a page can show the speed and the time left.
    for s in features[1:]:
        assert s["counted"]["rate"] > 0 and s["images_per_second"] == s["counted"]["rate"]
        assert s["eta_seconds"] is not None and s["eta_seconds"] >= 0
    assert features[-1]["eta_seconds"] == 0

    # The epochs: loss points from the very first batch (not only every 5th).
    steps = [step for step, _ in snap["batch_losses"]]
    assert steps[:2] == [1, 2], steps
    assert len(snap["history"]) == 2

    # The final evaluation is counted too, over the 16 validation pictures.
    evaluation = [s for s in job.seen if s["counted"]["name"].startswith("Evaluating the best model")]
    assert evaluation and evaluation[-1]["counted"]["done"] == 16
    assert all(s["history"] for s in evaluation)  # after the epochs


def test_a_stop_in_the_feature_pass_says_there_is_nothing_to_resume(tmp_path, small_data):
    job = _run(tmp_path, small_data, stop=True)
    snap = job.snapshot()
    assert snap["state"] == "stopped"
    assert "nothing to resume" in snap["reason"] and "you can resume" not in snap["reason"]
    run = open_run(job.run_dir)
    assert run.state == "stopped" and not run.can_resume


def test_a_phase_rate_and_time_left_start_again_with_each_phase():
    first = phase_progress(None, "Features", 0, 100, now=10.0)
    assert first["counted"]["rate"] is None and first["eta_seconds"] is None  # nothing measured yet
    later = phase_progress(first["counted"], "Features", 25, 100, now=15.0)
    assert later["counted"]["rate"] == 5.0 and later["eta_seconds"] == 15.0
    # Then timed from the first report on: the first batch's warm-up does not count twice.
    steady = phase_progress(later["counted"], "Features", 75, 100, now=20.0)
    assert steady["counted"]["rate"] == 10.0 and steady["eta_seconds"] == 2.5
    other = phase_progress(steady["counted"], "Evaluating", 0, 10, now=20.0)
    assert other["counted"]["started"] == 20.0 and other["counted"]["done"] == 0
    # A phase whose first report comes after its first picture is timed from its start.
    scan = phase_progress(other["counted"], "Reading", 1, 10, now=12.0, since=10.0)
    assert scan["counted"]["rate"] == 0.5 and scan["eta_seconds"] == 18.0


def test_the_first_batches_grow_to_the_full_size():
    sizes = [len(chunk) for chunk in batch_chunks(list(range(200)), 64, first=8)]
    assert sizes == [8, 16, 32, 64, 64, 16]
    assert [len(c) for c in batch_chunks(list(range(130)), 64)] == [64, 64, 2]


def test_an_epoch_of_one_batch_says_no_batch_count():
    """A small folder trains in one batch per epoch: "batch 0 of 1" said nothing true."""
    from ui import live

    snap = {"state": "running", "phase": "Training", "epoch": 3, "epochs": 100, "batches": 1, "batch": 0}
    assert live.doing_now(snap) == "Epoch 3 of 100"
    assert live.doing_now(dict(snap, batches=4, batch=2)) == "Epoch 3 of 100 · batch 3 of 4"  # 2 done
    assert live.doing_now(dict(snap, batches=4, batch=0)) == "Epoch 3 of 100 · batch 1 of 4"
    assert live.doing_now(dict(snap, batches=4, batch=4)) == "Epoch 3 of 100 · batch 4 of 4"


def test_time_left_is_a_floor_while_more_blocks_are_still_to_learn(tmp_path, small_data):
    """A fine-tune's head-only first epoch runs faster than the epochs after
    it: its time left says "at least" (ui.words.fmt_time_left); once every
    block that will learn does, it is an estimate again."""
    job = _run(tmp_path, small_data, strategy="last-1", head_epochs=1)
    assert job.snapshot()["state"] == "finished", job.snapshot()["reason"]
    floors = {}
    for epoch, eta, floor in job.batch_reports:
        assert eta is not None and eta >= 0
        floors.setdefault(epoch, set()).add(floor)
    assert floors == {1: {True}, 2: {False}}, floors
    # And the page says what learns now, and when the next block starts.
    first, second = job.learning[1], job.learning[2]
    assert first.startswith("Learning now: the new head only. Next, ") and first.endswith(" at epoch 2."), first
    assert second.startswith("Learning now: the new head and ") and "No more blocks start" in second, second
    linear = _run(tmp_path, small_data)  # nothing changes during a linear probe: nothing to say
    assert linear.learning == {1: None, 2: None}


def test_a_pass_over_stored_versions_says_it_counts_versions(tmp_path, small_data):
    """With 2 stored versions of each of the 40 training pictures, the pass
    counts 2 x 40 + 16: its name says so, or "96 pictures" of a folder of 56
    reads wrong."""
    job = _run(tmp_path, small_data, strategy="last-1", augment="light", augment_views=2, epochs=2)
    assert job.snapshot()["state"] == "finished", job.snapshot()["reason"]
    passes = [s["counted"] for s in job.seen if s["counted"]["name"].startswith(FEATURE_PASS)]
    assert {c["name"] for c in passes} == {f"{FEATURE_PASS}, 2 changed versions of each training picture"}
    assert passes[-1]["done"] == passes[-1]["total"] == 2 * 40 + 16
