"""Command line: `python -m core scan | train | resume | predict | export | runs | backbones`.

Every command uses the same engine as the app. `train` prints one line per
epoch and ends with one line of JSON (run_dir, val_accuracy, best_epoch,
seconds, device, ...) so scripts and benchmarks can read the result.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import cli_checks
from .runs import DEFAULT_RUNS_DIR

if TYPE_CHECKING:  # for the annotation only; the commands import the engine where they use it
    from .config import TrainConfig


def _print_epoch(row: dict) -> None:
    print(f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  acc {row['train_accuracy']:.3f}  "
          f"val loss {row['val_loss']:.4f}  acc {row['val_accuracy']:.3f}  lr {row['lr']:.2e}  "
          f"{row['seconds']:.1f}s", flush=True)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from .config import OPTIMIZERS, SCHEDULES, TrainConfig

    d = TrainConfig(data_dir="")
    p.add_argument("--backbone", default=None, help="backbone name (see `python -m core backbones`); default: one whose weights are on this machine")
    p.add_argument("--init", default=d.init, help="'pretrained', 'random', or a path to a weights file")
    p.add_argument("--strategy", default=d.strategy, help="linear | last-N (e.g. last-2) | full | gradual | discriminative")
    p.add_argument("--unfreeze-every", type=int, default=d.unfreeze_every, help="gradual: epochs between unfreezing one more block")
    p.add_argument("--lr-factor", type=float, default=d.lr_factor, help="discriminative: rate multiplier per block towards the stem")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="pictures per step; 0 = chosen for this machine")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--optimizer", default=d.optimizer, choices=list(OPTIMIZERS))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--schedule", default=d.schedule, choices=list(SCHEDULES))
    p.add_argument("--augment", default=d.augment, choices=["auto", "none", "light", "strong"])
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--class-weighted", action="store_true")
    p.add_argument("--early-stopping", type=int, default=d.early_stopping, help="patience in epochs on val loss; 0 = off")
    p.add_argument("--head-hidden", type=int, default=d.head_hidden)
    p.add_argument("--head-dropout", type=float, default=d.head_dropout)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda | mps")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--no-feature-cache", action="store_true", help="run the frozen layers every epoch instead of once")
    p.add_argument("--runs-dir", default=str(DEFAULT_RUNS_DIR))


def _config_from_args(args) -> TrainConfig:
    from .backbones import default_backbone
    from .config import TrainConfig

    return TrainConfig(
        data_dir=str(Path(args.data_dir).resolve()), backbone=args.backbone or default_backbone(), init=args.init,
        strategy=args.strategy, unfreeze_every=args.unfreeze_every, lr_factor=args.lr_factor, epochs=args.epochs,
        batch_size=args.batch_size, image_size=args.image_size, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, momentum=args.momentum, schedule=args.schedule, augment=args.augment,
        label_smoothing=args.label_smoothing, class_weighted=args.class_weighted,
        early_stopping=args.early_stopping, head_hidden=args.head_hidden, head_dropout=args.head_dropout,
        seed=args.seed, val_fraction=args.val_fraction, device=args.device, mixed_precision=not args.no_amp,
        num_workers=args.num_workers, feature_cache=not args.no_feature_cache)


def _finish(job, run) -> int:
    snap = job.snapshot()
    if snap["state"] != "finished":
        print(f"Run {snap['state']}: {snap['reason']}", file=sys.stderr)
        print(json.dumps({"run_dir": str(run.path), "state": snap["state"], "reason": snap["reason"]}))
        return 1
    note = (snap.get("feature_cache") or {}).get("note")
    if note:  # stdout stays one JSON line for scripts
        print(note, file=sys.stderr)
    print(json.dumps({"state": "finished", **snap["result"]}))
    return 0


def cmd_scan(args) -> int:
    from .scan import DataFolderError, scan_folder

    try:
        report = scan_folder(args.data_dir, val_fraction=args.val_fraction, seed=args.seed)
    except DataFolderError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0 if report.can_train else 1


def cmd_train(args) -> int:
    from .training import train_blocking

    config = _config_from_args(args)
    print(f"Training {config.backbone} ({config.strategy}) on {config.data_dir} for {config.epochs} epochs", flush=True)
    job, run = train_blocking(config, runs_dir=args.runs_dir, on_epoch=_print_epoch)
    return _finish(job, run)


def cmd_resume(args) -> int:
    from .runs import open_run
    from .config import TrainConfig
    from .training import train_blocking

    run = open_run(args.run_dir)
    config = TrainConfig.from_dict(run.config)
    if args.epochs:
        config.epochs = args.epochs
        run.write_json("config.json", config.to_dict())
    done = run.status.get("epochs_done", 0)
    print(f"Resuming {run.name} after epoch {done} of {config.epochs}", flush=True)
    job, run = train_blocking(config, runs_dir=run.path.parent, on_epoch=_print_epoch, run=run, resume=True)
    return _finish(job, run)


def cmd_predict(args) -> int:
    from .evaluation import list_images, load_run_model, predict_folder_csv, predict_images

    if args.csv:
        out = predict_folder_csv(args.run_dir, args.path, args.csv, k=args.top_k, device=args.device)
        print(out)
        return 0
    loaded = load_run_model(args.run_dir, device=args.device)
    results = predict_images(loaded, list_images(args.path), k=args.top_k)
    for r in results:
        if args.json:
            print(json.dumps(r))
        elif r.get("error"):
            print(f"{r['path']}: {r['error']}")
        else:
            print(f"{r['path']}: " + ", ".join(f"{c} {p:.3f}" for c, p in r["top"]))
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    zip_path = export_run(args.run_dir, args.out, verify=not args.no_check,
                          on_step=lambda text: print(text, file=sys.stderr, flush=True))
    print(zip_path)
    return 0


def cmd_runs(args) -> int:
    from .runs import RunStore

    for run in RunStore(args.runs_dir).list():
        s = run.summary()
        acc = f"{s['best_val_accuracy']:.3f}" if s["best_val_accuracy"] is not None else "-"
        print(f"{s['run']}  {s['state']:<11} {s['backbone']:<18} {s['strategy']:<14} val acc {acc}")
    return 0


def cmd_backbones(args) -> int:
    from .backbones import list_backbones, weights_cached

    for b in list_backbones():
        top1 = f"{b.top1:.1f}%" if b.top1 else "  -  "
        print(f"{b.name:<20} {b.params_m:>6.1f}M params  top-1 {top1}  {b.speed:<6} "
              f"{'on this machine' if weights_cached(b.name) else 'needs download'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Transfer Studio's engine from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scan", help="report what is in an image folder")
    p.add_argument("data_dir")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("train", help="fine-tune a pretrained backbone on an image folder")
    p.add_argument("data_dir")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="continue a stopped or interrupted run from its last epoch")
    p.add_argument("run_dir")
    p.add_argument("--epochs", type=int, default=None, help="new total number of epochs")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("predict", help="top-k classes for an image or every image in a folder")
    p.add_argument("run_dir")
    p.add_argument("path")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", default=None, metavar="OUT",
                   help="write one CSV row per image (file, top_class, confidence, top_k, error) to OUT")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a run as TorchScript and ONNX with a model card, in one zip")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="folder for the zip (default: RUN_DIR/export)")
    p.add_argument("--no-check", action="store_true", help="skip comparing the exports with the model")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--runs-dir", default=str(DEFAULT_RUNS_DIR))
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("backbones", help="list the backbones")
    p.set_defaults(func=cmd_backbones)
    cli_checks.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
