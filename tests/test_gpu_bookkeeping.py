"""The GPU path's bookkeeping, as far as a CPU can show it: which device a
job releases and which thread builds a batch, the precision a GPU's compute
capability gets, what a checkpoint copies and shares, what resuming restores,
how DataLoader workers start and when threads replace them, and that export
leaves the caller's model alone. bench/gpu_check.sh checks the rest on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from core import devices
from core.checkpoints import (
    CheckpointCopies,
    restore_random_state,
    restore_scaler,
    resume_payload,
)
from core.config import TrainConfig
from core.decisions import _val_batch_size
from core.evaluation import LoadedModel
from core.export import export_torchscript
from core.features import PrefixRunner
from core.jobs import JobManager
from core.loading import threaded_batches
from core.models import build_model
from core.runs import open_run
from tests.folders import PACKAGED_BACKBONE, PHOTOS, small_copy

REPO = Path(__file__).resolve().parent.parent


# --- precision ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capability", "dtype"),
    [
        ((7, 0), torch.float16),  # V100: bf16 only emulated
        ((7, 5), torch.float16),  # T4
        ((8, 0), torch.bfloat16),  # A100
        ((8, 9), torch.bfloat16),  # L4, RTX 40xx
        ((9, 0), torch.bfloat16),  # H100, H200
    ],
)
def test_bf16_only_where_the_gpu_computes_it(capability, dtype):
    assert devices.half_precision_for(capability) == dtype


def test_cpu_precision_follows_its_bf16_units():
    cpu = torch.device("cpu")
    assert devices.autocast_dtype(cpu, True) is None  # training steps, validation, evaluation
    units = torch.bfloat16 if devices.cpu_has_bf16_units() else None
    assert devices.feature_pass_autocast(cpu, True) is units  # the frozen blocks' pass over training pictures
    assert devices.feature_pass_autocast(cpu, False) is None  # --no-amp


# --- releasing memory ----------------------------------------------------------------


def test_release_never_raises_and_never_starts_cuda():
    # A GPU this process never used (here: none at all) is left alone, and a
    # release after a run can never raise from the job's `finally`.
    assert devices.release_device_memory(torch.device("cuda", 1)) is None
    assert devices.release_device_memory(torch.device("cpu")) is None
    assert devices.release_device_memory(None) is None
    assert not torch.cuda.is_initialized()


def test_use_in_this_thread_leaves_cuda_alone_for_a_cpu_job():
    devices.use_in_this_thread(torch.device("cpu"))
    assert not torch.cuda.is_initialized()


# --- reader threads ------------------------------------------------------------------


class _Witness(torch.Tensor):
    """A tensor that notes which thread stacks it into a batch."""

    stacked_in: ClassVar[set[str]] = set()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.stack:
            cls.stacked_in.add(threading.current_thread().name)
        return super().__torch_function__(func, types, args, kwargs or {})


class _Items(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.zeros(3, 4, 4).as_subclass(_Witness), i % 2, i


def test_batches_are_assembled_by_the_reader_threads():
    # The thread that trains only takes finished batches: stacking (and on a
    # GPU pinning) happens in the threads that read the items.
    _Witness.stacked_in.clear()
    batches = list(threaded_batches(_Items(), 4, threads=2, ahead=1))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert [int(i) for b in batches for i in b[2]] == list(range(10))
    assert _Witness.stacked_in
    assert threading.current_thread().name not in _Witness.stacked_in


def test_reader_threads_do_not_deadlock_with_one_thread():
    batches = list(threaded_batches(_Items(), 3, threads=1, ahead=3))
    assert sum(len(b[1]) for b in batches) == 10


# --- checkpoints -----------------------------------------------------------------------


def _model():
    return build_model("efficientnet_lite0", num_classes=3, init="random")


def test_checkpoint_copies_what_trains_and_shares_what_does_not():
    model = _model()
    trained = {name: name in ("final_conv", "head") for name in model.block_names}
    copies = CheckpointCopies(model)
    first = copies.model_state(trained)
    live = model.state_dict()
    assert first.keys() == live.keys()  # still the whole state dict: best.pt loads as it is
    for name, tensor in first.items():
        block = name.split(".")[1]
        if trained[block]:  # copied: parameters and BatchNorm statistics of a trained block
            assert tensor.data_ptr() != live[name].data_ptr(), name
        else:  # frozen: not copied at all on a CPU
            assert tensor.data_ptr() == live[name].data_ptr(), name
    assert any("final_conv" in n and "running_mean" in n for n in first)

    head_weight = next(n for n in first if n.startswith("blocks.head") and n.endswith("weight"))
    saved = first[head_weight].clone()
    with torch.no_grad():
        model.state_dict()[head_weight].add_(1.0)  # the next batches train it in place
    assert torch.equal(first[head_weight], saved)

    second = copies.model_state(trained)
    frozen_name = next(n for n in first if n.startswith("blocks.stem"))
    assert second[frozen_name] is first[frozen_name]  # frozen tensors: one copy for every epoch

    unfrozen = {**trained, "stage4": True}  # gradual unfreezing: from now on it is copied
    third = copies.model_state(unfrozen)
    stage4 = next(n for n in first if n.startswith("blocks.stage4"))
    assert third[stage4].data_ptr() != live[stage4].data_ptr()

    fresh = _model()
    fresh.load_state_dict(third)  # strict: every entry there
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_resume_payload_and_restore_on_a_cpu():
    model = _model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    config = TrainConfig(data_dir="x", backbone="efficientnet_lite0")
    trained = {name: True for name in model.block_names}
    payload = CheckpointCopies(model).payload(config, ["a", "b", "c"], 1, trained)
    last = resume_payload(payload, optimizer, scheduler, scaler, {"epoch": 1}, 0, torch.device("cpu"))
    assert "cuda_rng" not in last  # a CPU run has no GPU random state to keep
    state = next(iter(last["optimizer"]["state"].values()))
    live = next(iter(optimizer.state_dict()["state"].values()))
    assert state["exp_avg"].data_ptr() != live["exp_avg"].data_ptr()

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ckpt = {"rng": torch.get_rng_state(), "cuda_rng": torch.ByteTensor(16)}
    torch.rand(7)
    restore_random_state(ckpt, torch.device("cpu"))  # the GPU's state is only for a GPU
    assert torch.equal(torch.rand(3), expected)
    assert not torch.cuda.is_initialized()


def test_scaler_state_loads_only_when_present_and_matching():
    fp16 = torch.amp.GradScaler("cpu", enabled=True)  # what an fp16 GPU run has
    # last.pt of a CPU or bf16 run: its scaler was off and saved nothing.
    assert restore_scaler(fp16, {}) is False
    assert restore_scaler(fp16, None) is False
    saved = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0).state_dict()
    assert restore_scaler(fp16, saved) is True
    assert fp16.get_scale() == 1024.0
    assert restore_scaler(torch.amp.GradScaler("cpu", enabled=False), saved) is False


# --- frozen prefix copies ----------------------------------------------------------------


def test_prefix_runner_frees_the_copy_it_replaces():
    model = _model().eval()
    runner = PrefixRunner(model)
    three = runner.blocks(0, 3)
    assert runner.blocks(0, 3) is three  # made once per span
    two = runner.blocks(0, 2)  # gradual unfreezing: one block fewer
    assert all(p.numel() == 0 for p in three.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(two(x), model.forward_to(2, x), atol=1e-3)
    runner.release()
    assert all(p.numel() == 0 for p in two.parameters())


# --- loaders -------------------------------------------------------------------------------


def test_worker_start_method():
    assert devices.worker_start_method(other_threads=False, platform="linux") == "fork"
    assert devices.worker_start_method(other_threads=True, platform="linux") == "forkserver"
    assert devices.worker_start_method(other_threads=False, platform="darwin") == "spawn"
    assert devices.worker_start_method(other_threads=True, platform="win32") == "spawn"


def test_threads_replace_workers_when_shared_memory_is_short():
    mb = 2**20
    workers, method, note = devices.loader_workers(8, other_threads=True, shm_free=64 * mb)
    assert workers == 0 and method is None
    assert "/dev/shm" in note and "64 MB free" in note and "--shm-size" in note
    # Workers that do not fork get the decoded images through shared memory too.
    assert (
        devices.loader_workers(8, other_threads=True, shm_free=1024 * mb, shared_bytes=2048 * mb, platform="linux")[0]
        == 0
    )
    workers, method, note = devices.loader_workers(
        8, other_threads=False, shm_free=1024 * mb, shared_bytes=2048 * mb, platform="linux"
    )
    assert (workers, method) == (8, "fork") and "8 worker processes" in note and "5 minutes" in note
    workers, method, note = devices.loader_workers(4, other_threads=True, shm_free=None, platform="linux")
    assert (workers, method) == (4, "forkserver") and "other threads" in note
    assert devices.loader_workers(0, other_threads=True, shm_free=0)[0] == 0


def test_validation_batches_spread_over_the_workers():
    assert _val_batch_size(153, 256, 8) == 20  # every worker decodes a batch, not one worker 153 pictures
    assert _val_batch_size(10_000, 256, 8) == 256
    assert _val_batch_size(40, 256, 8) == 16
    assert _val_batch_size(153, 256, 0) == 256  # threads share each batch anyway


@pytest.mark.slow
def test_worker_processes_from_a_job_thread_start_safely(tmp_path, empty_torch_home):
    # A job trains in a JobManager thread, beside the app's threads: its
    # DataLoader workers must not fork; the run says how they started.
    data = small_copy(PHOTOS, tmp_path / "data", train=3, val=3)
    config = TrainConfig(
        data_dir=str(data),
        backbone=PACKAGED_BACKBONE,
        strategy="last-1",
        augment="light",
        augment_views=0,  # the pictures are read every epoch, by worker processes
        epochs=1,
        batch_size=4,
        num_workers=2,
        device="cpu",
        seed=0,
        cache_dir=str(tmp_path / "cache"),
    )
    job = JobManager(tmp_path / "runs").submit(config)
    assert job.wait(600)
    assert job.state == "finished", job.snapshot()["reason"]
    decisions = open_run(job.run_dir).status["decisions"]
    assert decisions["workers"] == 2
    assert decisions["worker_start"] == "forkserver"
    assert "started with forkserver" in decisions["loader_note"]
    # A small validation set: batches of the CPU's inference batch, 8, so both workers read
    assert decisions["val_batch_size"] == decisions["eval_batch_size"] == 8


def test_cpu_job_leaves_cuda_uninitialised_and_says_how_it_read(tmp_path, empty_torch_home):
    data = small_copy(PHOTOS, tmp_path / "data", train=3, val=2)
    env = {**os.environ, "TRANSFER_STUDIO_CACHE": str(tmp_path / "cache")}
    script = (
        "import sys, torch\nfrom core.cli import main\n"
        "rc = main(sys.argv[1:])\nprint('cuda initialised:', torch.cuda.is_initialized(), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "train",
            str(data),
            "--backbone",
            PACKAGED_BACKBONE,
            "--strategy",
            "last-1",
            "--augment",
            "light",
            "--augment-views",
            "0",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "cuda initialised: False" in out.stderr
    assert "Threads in this process read the images." in out.stderr  # the loader choice, in words
    result = json.loads(out.stdout.strip().splitlines()[-1])
    status = open_run(result["run_dir"]).status
    assert status["device"] == "cpu"
    assert status["decisions"]["workers"] == 0


# --- export ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # the test loads model.ts itself
def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    model = _model().train()
    params = list(model.parameters())
    info = model.info
    loaded = LoadedModel(model, ["a", "b", "c"], info.transforms(64), {"image_size": 64}, 73, torch.device("cpu"))
    export_torchscript(loaded, tmp_path / "model.ts", torch.zeros(1, 3, 64, 64))
    assert model.training  # not switched to eval mode behind the caller's back
    assert list(model.parameters()) == params and all(p is q for p, q in zip(model.parameters(), params))
    assert torch.jit.load(str(tmp_path / "model.ts"))(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
