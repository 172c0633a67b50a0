"""`python -m core sweep DATA_DIR --backbones a,b,c [--strategies s,t] [train options]`:
one run per (backbone, strategy), the same as the Compare page's "compare
networks". With several GPUs the runs train at the same time, one per GPU
(core.compare.spread_over_gpus); otherwise one after another. Prints a line
as each run ends and, last, one JSON line: the sweep and its runs."""

from __future__ import annotations

import json


def add_command(sub, add_train_options, config_from_args) -> None:
    p = sub.add_parser(
        "sweep", help="train one run per backbone (and strategy) on the same pictures; one per GPU at a time"
    )
    p.add_argument("data_dir")
    p.add_argument("--backbones", required=True, help="comma-separated backbone names (see `backbones`)")
    p.add_argument("--strategies", default=None, help="comma-separated strategies (default: --strategy)")
    add_train_options(p)
    p.set_defaults(func=lambda args: cmd_sweep(args, config_from_args))


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def cmd_sweep(args, config_from_args) -> int:
    from .compare import queue_sweep, sweep_of
    from .jobs import JobManager

    args.backbone = args.backbone or _names(args.backbones)[0]
    config = config_from_args(args)
    jobs = queue_sweep(JobManager(args.runs_dir), config, _names(args.backbones), _names(args.strategies))
    devices = sorted({job.config.device for job in jobs})
    print(f"Sweep of {len(jobs)} runs on {', '.join(devices)}", flush=True)
    rows = []
    try:
        for job in jobs:
            job.wait()
            snap = job.snapshot()
            result = snap.get("result") or {}
            rows.append(
                {
                    "run_dir": job.run_dir,
                    "backbone": job.config.backbone,
                    "strategy": job.config.strategy,
                    "device": job.config.device,
                    "state": snap["state"],
                    "val_accuracy": result.get("val_accuracy"),
                    "reason": snap["reason"],
                }
            )
            acc = result.get("val_accuracy")
            line = f"{job.config.backbone} ({job.config.strategy}): {snap['state']}"
            print(line + (f", val acc {acc:.3f}" if acc is not None else f": {snap['reason']}"), flush=True)
    except KeyboardInterrupt:
        for job in jobs:
            job.request_stop()
        for job in jobs:
            job.wait()
        raise
    sweep = (sweep_of(jobs[0].run_dir) or {}).get("sweep") if jobs else None
    print(json.dumps({"sweep": sweep, "devices": devices, "runs": rows}))
    return 0 if all(r["state"] == "finished" for r in rows) else 1
