"""Command line: `python -m core scan | train | resume | predict | export | runs | backbones | lr-find`.

Every command uses the same engine as the app. `train` prints one line per
epoch and ends with one line of JSON (run_dir, val_accuracy, best_epoch,
seconds, device, ...) so scripts and benchmarks can read the result. A
mistake (a missing folder, an unreadable weights file, a runs folder it may
not write, a run another process trains) is one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import cli_adapt, cli_checks, cli_data, cli_lr_find, cli_sweep, collection
from .paths import pasted_path
from .runs import DEFAULT_RUNS_DIR, RUNS_ENV, default_runs_dir


def launched_by_torchrun() -> bool:
    """torchrun (or another launcher) started this command as one of several processes."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


if TYPE_CHECKING:  # for the annotation only; the commands import the engine where they use it
    from .config import TrainConfig


def _print_epoch(row: dict) -> None:
    # The rate from the epoch's first step to its last: the end alone read "lr 0.00e+00" on
    # a cosine's last epoch, as if nothing had learned in it.
    rates = f"{row['lr_start']:.2e}->{row['lr']:.2e}" if "lr_start" in row else f"{row['lr']:.2e}"
    print(
        f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  acc {row['train_accuracy']:.3f}  "
        f"val loss {row['val_loss']:.4f}  acc {row['val_accuracy']:.3f}  lr {rates}  {row['seconds']:.1f}s",
        flush=True,
    )


# Where the command line differs from the config's own default: with no
# --backbone, the run takes one whose weights are already on this machine
# (core.models.default_backbone), found only when a training starts.
_CLI_DEFAULTS = {"backbone": (None, "default: one whose weights are on this machine")}


_METAVARS = {int: "N", float: "X"}


def _train_fields():
    """(field, flag, type) for every TrainConfig setting the command line offers."""
    from dataclasses import fields
    from typing import get_type_hints

    from .config import TrainConfig

    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        cli = f.metadata.get("cli", True)
        if cli is False:
            continue
        flag = cli if isinstance(cli, str) else "--" + f.name.replace("_", "-")
        # `int | None` and the like: the type that is not None.
        kind = next((t for t in getattr(hints[f.name], "__args__", (hints[f.name],)) if t is not type(None)), str)
        yield f, flag, kind


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """One option per TrainConfig setting, from its field: the flag, type,
    default, choices and help are the field's (see core/config.py)."""
    from .config import defaults, number_text

    values = defaults()
    for f, flag, kind in _train_fields():
        default, note = _CLI_DEFAULTS.get(f.name, (values[f.name], None))
        text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        if kind is bool:
            # "--no-x" turns a setting that is on by default off; any other
            # flag turns it on.
            action = "store_false" if flag.startswith("--no-") else "store_true"
            if action == "store_false":  # the help says what the setting does: this flag switches it off
                text = f"switches off '{f.metadata['label']}': {text}"
            p.add_argument(flag, dest=f.name, action=action, default=default, help=text)
            continue
        choices, limits = f.metadata.get("choices"), f.metadata.get("limits")
        said = [f"values: {f.metadata['values']}"] if f.metadata.get("values") else []
        said += [note or f"default: {default}"] if note or default is not None else []
        said += [f"{number_text(limits[0])} to {number_text(limits[1])}"] if limits else []
        if said:
            text += f" ({'; '.join(said)})"
        p.add_argument(
            flag,
            dest=f.name,
            type=kind,
            default=default,
            choices=list(choices) if choices else None,
            metavar=_METAVARS.get(kind) if not choices else None,
            help=text,
        )
    p.add_argument(
        "--runs-dir",
        default=str(default_runs_dir()),
        help=f"where run folders go (default: ${RUNS_ENV}, else ./{DEFAULT_RUNS_DIR}; now {default_runs_dir()})",
    )
    from .recipes import RECIPES

    p.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default=None,
        help="fill the settings from a classic tutorial (options given here still win): "
        + "; ".join(f"{name}: {r.title}" for name, r in RECIPES.items()),
    )


def _config_from_args(args) -> TrainConfig:
    from .backbones import default_backbone
    from .config import TrainConfig, setting_problems

    flags = {f.name: flag for f, flag, _ in _train_fields()}
    values = {name: getattr(args, name) for name in flags}
    values["backbone"] = values["backbone"] or default_backbone()
    config = TrainConfig(data_dir=str(Path(args.data_dir).resolve()), **values)
    problems = setting_problems(config)
    if problems:  # refused before any run folder is made, as argparse refuses a wrong choice
        lines = (f"  {flags.get(name, name)} {text}" for name, text in problems.items())
        raise SystemExit("Some settings cannot be used:\n" + "\n".join(lines))
    return config


def _finish(job, run, printing: bool = True) -> int:
    snap = job.snapshot()
    if not printing:  # a rank other than 0 of a torchrun training: rank 0 reports
        return 0 if snap["state"] == "finished" else 1
    if snap["state"] != "finished":
        print(f"Run {snap['state']}: {' '.join(str(snap['reason']).split())}", file=sys.stderr)  # one line
        print(json.dumps({"run_dir": str(run.path), "state": snap["state"], "reason": snap["reason"]}))
        return 1
    notes = [
        (snap.get("feature_cache") or {}).get("note"),
        (run.status.get("decisions") or {}).get("loader_note"),
        (run.status.get("decisions") or {}).get("precision_note"),
        snap.get("resizing_note"),
        snap.get("resume_note"),
    ]
    for note in filter(None, notes):  # stdout stays one JSON line for scripts
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
    from .jobs import train_blocking
    from .scan import check_data_folder

    # What the engine's imports made lives as long as this command: no
    # collection needs to walk it again (a full one would take longer than a
    # warm linear probe's epochs), the one at the job's end included.
    collection.freeze_loaded()
    config = _config_from_args(args)
    check_data_folder(config.data_dir)  # a mistyped folder: one line, before "Training ..." is printed
    if launched_by_torchrun():  # several processes, one run (core.cli_ddp)
        from . import cli_ddp

        rank0 = os.environ.get("RANK", "0") == "0"
        if rank0:
            print(
                f"Training {config.backbone} ({config.strategy}) on {config.data_dir} for {config.epochs} epochs, "
                f"{os.environ.get('WORLD_SIZE')} processes",
                flush=True,
            )
        job, run = cli_ddp.train(config, args.runs_dir, on_epoch=_print_epoch)
        return _finish(job, run, printing=rank0)
    print(f"Training {config.backbone} ({config.strategy}) on {config.data_dir} for {config.epochs} epochs", flush=True)
    job, run = train_blocking(config, runs_dir=args.runs_dir, on_epoch=_print_epoch)
    code = _finish(job, run)
    return code or cli_adapt.adapt_after_training(run.path, args)


def cmd_resume(args) -> int:
    from .jobs import resume_blocking
    from .resume import prepare_resume

    if launched_by_torchrun():  # several processes, one run (core.cli_ddp)
        from . import cli_ddp

        rank0 = os.environ.get("RANK", "0") == "0"
        job, run, done = cli_ddp.resume(args.run_dir, args.epochs, on_epoch=_print_epoch)
        return _finish(job, run, printing=rank0)
    plan = prepare_resume(args.run_dir, args.epochs)  # refused while another process trains it
    print(f"Resuming {plan.run.name} after epoch {plan.epochs_done} of {plan.config.epochs}", flush=True)
    job, run = resume_blocking(plan, on_epoch=_print_epoch)
    return _finish(job, run)


def cmd_predict(args) -> int:
    from .evaluation import list_images, load_run_model, predict_folder_csv, predict_images

    if args.csv:
        out = predict_folder_csv(args.run_dir, args.path, args.csv, k=args.top_k, device=args.device)
        print(out)
        return 0
    paths = list_images(args.path, with_heic=True)
    if not paths:
        print(f"There are no pictures (JPEG, PNG, GIF, BMP, WebP or TIFF) in {args.path}.", file=sys.stderr)
        return 1
    loaded = load_run_model(args.run_dir, device=args.device)
    results = predict_images(loaded, paths, k=args.top_k)
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

    zip_path = export_run(
        args.run_dir, args.out, verify=not args.no_check, on_step=lambda text: print(text, file=sys.stderr, flush=True)
    )
    print(zip_path)
    return 0


def cmd_runs(args) -> int:
    from .runs import RunStore

    for run in RunStore(args.runs_dir).list():
        s = run.summary()
        acc = f"{s['best_val_accuracy']:.3f}" if s["best_val_accuracy"] is not None else "-"
        backbone, strategy = s["backbone"] or "?", s["strategy"] or "?"
        line = f"{s['run']}  {s['state']:<11} {backbone!s:<18} {strategy!s:<14} val acc {acc}"
        print(line + (f"  {s['reason']}" if s["state"] == "damaged" else ""))
    return 0


def cmd_backbones(args) -> int:
    from .availability import backbone_entries
    from .backbones import list_backbones, weights_cached

    if args.json:  # one JSON list: name, ready, params, imagenet_top1, ... (core.availability)
        print(json.dumps(backbone_entries(), indent=1))
        return 0
    for b in list_backbones():
        top1 = f"{b.top1:.1f}%" if b.top1 else "  -  "
        print(
            f"{b.name:<20} {b.params_m:>6.1f}M params  top-1 {top1}  {b.speed:<6} "
            f"{'on this machine' if weights_cached(b.name) else 'needs download'}"
        )
    return 0


def build_parser(train_defaults: dict | None = None) -> argparse.ArgumentParser:
    """The parser; `train_defaults` (a recipe's settings) replace the train
    options' defaults, so options given on the command line still win."""
    parser = argparse.ArgumentParser(
        prog="python -m core", description="Transfer Studio's engine from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scan", help="report what is in an image folder")
    p.add_argument("data_dir", type=pasted_path)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("train", help="fine-tune a pretrained backbone on an image folder")
    p.add_argument("data_dir", type=pasted_path)
    _add_train_options(p)
    cli_adapt.add_adapt_to(p)
    p.set_defaults(func=cmd_train, **(train_defaults or {}))

    p = sub.add_parser("resume", help="continue a stopped or interrupted run from its last epoch")
    p.add_argument("run_dir", type=pasted_path)
    p.add_argument("--epochs", type=int, default=None, help="new total number of epochs")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("predict", help="top-k classes for an image or every image in a folder")
    p.add_argument("run_dir", type=pasted_path)
    p.add_argument("path", type=pasted_path)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--csv",
        default=None,
        metavar="OUT",
        help="write one CSV row per image (file, top_class, confidence, top_k, error) to OUT",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a run as TorchScript and ONNX with a model card, in one zip")
    p.add_argument("run_dir", type=pasted_path)
    p.add_argument("--out", default=None, help="folder for the zip (default: RUN_DIR/export)")
    p.add_argument("--no-check", action="store_true", help="skip comparing the exports with the model")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--runs-dir", default=str(default_runs_dir()))
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("backbones", help="list the backbones")
    p.add_argument("--json", action="store_true", help="one JSON list; `ready`: its weights are on this machine")
    p.set_defaults(func=cmd_backbones)
    cli_checks.add_commands(sub)
    cli_data.register(sub)
    cli_sweep.add_command(sub, _add_train_options, _config_from_args)
    cli_lr_find.register(sub, _add_train_options, _config_from_args)
    sub.choices["lr-find"].set_defaults(**(train_defaults or {}))
    cli_adapt.register(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's options; with --recipe, the recipe's settings fill those
    not given on the command line."""
    args = build_parser().parse_args(argv)
    if getattr(args, "recipe", None):
        from .recipes import recipe_settings

        args = build_parser(recipe_settings(args.recipe)).parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run a command. A mistake a person can fix is one line and exit 2; any
    other error one line and exit 1 (TRANSFER_STUDIO_DEBUG=1 shows the traceback)."""
    from .errors import UserError, friendly

    args = parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # the command line's one way out
        if os.environ.get("TRANSFER_STUDIO_DEBUG") == "1":
            raise
        mistake = isinstance(exc, (UserError, OSError, ValueError))
        print(
            f"error: {friendly(exc)}" + ("" if mistake else " (TRANSFER_STUDIO_DEBUG=1 shows the details)"),
            file=sys.stderr,
        )
        return 2 if mistake else 1


if __name__ == "__main__":
    sys.exit(main())
