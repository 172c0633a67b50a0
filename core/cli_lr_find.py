"""`python -m core lr-find DATA_DIR [train options]`: the learning-rate finder
(core.lr_find) from the command line.

It takes the train command's options (the same settings, the same recipe),
sweeps what a training with them would train (core.lr_find.swept_plan),
prints the curve as a few lines of rate and loss, the suggestion in words,
and ends with one line of JSON (suggestion, steepest, lrs, losses) for scripts.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction, add_train_options, config_from_args) -> None:
    """Add the lr-find command; `add_train_options` and `config_from_args`
    are core.cli's, passed in so that this module does not import it."""
    p = sub.add_parser(
        "lr-find", help="sweep the learning rate over a short run of what the training would train, and suggest one"
    )
    p.add_argument("data_dir")
    add_train_options(p)
    p.add_argument("--start-lr", type=float, default=1e-7, metavar="X", help="the sweep's first rate (default: 1e-07)")
    p.add_argument(
        "--end-lr",
        type=float,
        default=None,
        metavar="X",
        help="the sweep's last rate (default: 1000 when only the new head learns with SGD, else 10)",
    )
    p.add_argument(
        "--steps", type=int, default=None, metavar="N", help="steps of the sweep (default: 12.5 a decade of rates)"
    )
    p.set_defaults(func=lambda args: cmd_lr_find(args, config_from_args(args)))


def cmd_lr_find(args, config) -> int:
    from .lr_find import lr_find

    print(f"Sweeping the learning rate for {config.backbone} ({config.strategy}) on {config.data_dir}", flush=True)
    result = lr_find(config, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    every = max(1, len(result.lrs) // 12)
    for lr, loss in list(zip(result.lrs, result.losses))[::every]:
        print(f"  lr {lr:9.2e}  loss {loss:.4f}")
    print(result.words, flush=True)
    print(json.dumps({"suggestion": result.suggestion, **result.to_dict()}))
    return 0
