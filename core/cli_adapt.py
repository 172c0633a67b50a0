"""The command line's domain adaptation: `python -m core adapt RUN_DIR
TARGET_DIR [--labelled-target DIR] [--as-new-run]`, and `train --adapt-to DIR
[--as-new-run]`, which adapts the run it just trained (core.adapt). With
--as-new-run the adapted model is kept as a new run beside it
(core.adapted_run), which predict, export and the app take like any run."""

from __future__ import annotations

import argparse
import json
import sys


def _options(p: argparse.ArgumentParser) -> None:
    from .config import ADAPT_METHODS, DEFAULT_ADAPT_METHOD

    p.add_argument(
        "--adapt-method",
        default=DEFAULT_ADAPT_METHOD,
        choices=list(ADAPT_METHODS),
        help="adabn: re-estimate BatchNorm statistics only; self-training: align the features, then learn "
        f"from the new pictures with entropy minimisation and pseudo-labels (default: {DEFAULT_ADAPT_METHOD})",
    )
    p.add_argument(
        "--as-new-run",
        action="store_true",
        help="keep the adapted model as a new run in the same runs folder, so that predict, export and the app "
        "(Playground, Results, Compare) use it like any run",
    )


def _summary(record: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{v:.3f}"

    s, t = record["source"], record["target"]
    text = (
        f"Adapted ({record['method']}) to {record['target_pictures']} pictures in {record['seconds']}s: "
        f"source accuracy {pct(s['before'])} -> {pct(s['after'])}"
    )
    if t["after"] is not None:
        text += f"; target accuracy {pct(t['before'])} -> {pct(t['after'])} (AdaBN alone {pct(t['adabn'])})"
    if record.get("new_run"):
        text += f". Kept as a new run: {record['new_run']}"
    return text


def _adapt(run_dir, target, labelled, args, quiet: bool) -> dict:
    """Adapt; with --as-new-run, keep the result as a run ("new_run": its folder, in the record returned)."""
    from .adapt import adapt_run

    def say(phase: str) -> None:
        print(phase, file=sys.stderr, flush=True)

    record = adapt_run(
        run_dir,
        target,
        labelled,
        method=args.adapt_method,
        device=getattr(args, "adapt_device", "cpu"),
        on_phase=None if quiet else say,
    )
    if getattr(args, "as_new_run", False):
        from .adapted_run import keep_as_run

        record["new_run"] = str(keep_as_run(run_dir, on_phase=None if quiet else say).path)
    return record


def cmd_adapt(args) -> int:
    record = _adapt(args.run_dir, args.target_dir, args.labelled_target, args, quiet=False)
    print(_summary(record), file=sys.stderr)
    print(json.dumps(record))
    return 0


def add_adapt_to(p: argparse.ArgumentParser) -> None:
    """train's --adapt-to DIR (and the method's options)."""
    p.add_argument(
        "--adapt-to",
        default=None,
        metavar="DIR",
        help="after training, adapt the model to these unlabelled pictures of another kind "
        "(writes adapted.pt and adapt.json into the run)",
    )
    _options(p)


def adapt_after_training(run_dir, args) -> int:
    """train --adapt-to: adapt the finished run; the summary goes to stderr so
    stdout still ends with train's one JSON line."""
    if not args.adapt_to:
        return 0
    record = _adapt(run_dir, args.adapt_to, None, args, quiet=True)
    print(_summary(record), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("adapt", help="adapt a trained run to unlabelled pictures of another kind (domain adaptation)")
    p.add_argument("run_dir")
    p.add_argument("target_dir", help="new pictures (any folder layout; no labels needed)")
    p.add_argument(
        "--labelled-target",
        default=None,
        metavar="DIR",
        help="labelled pictures of the new kind (one subfolder per class) to score before and after",
    )
    p.add_argument(
        "--device", dest="adapt_device", default="cpu", metavar="DEVICE", help="cpu, cuda, ... (default: cpu)"
    )
    _options(p)
    p.set_defaults(func=cmd_adapt)
