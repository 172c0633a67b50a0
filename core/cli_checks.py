"""The command line's checks of data and models: `inspect` (duplicates,
leaks, suspect labels, quality of a folder) and `evaluate` (a run on new
labelled pictures, with the interval around its accuracy)."""

from __future__ import annotations

import argparse
import json
import sys

from .paths import pasted_path


def cmd_inspect(args) -> int:
    from .inspection import inspect_folder

    def progress(phase: str, done: int, total: int) -> None:
        if not args.json and (done == total or done % 50 == 0):
            print(f"{phase}: {done}/{total}", file=sys.stderr, flush=True)

    report = inspect_folder(args.data_dir, args.backbone, folds=args.folds, device=args.device, progress=progress)
    found = report.to_dict()
    if args.json:
        keys = ("duplicates", "conflicts", "leaks", "suspect_labels", "quality", "notes")
        print(json.dumps({k: found[k] for k in keys}))
        return 0
    print(f"{report.pictures} pictures in {report.root}, checked with {report.backbone}")
    _print_groups("Copies or near-copies", report.duplicates)
    _print_groups("The same picture in two classes", report.conflicts)
    _print_groups("Leaks (the same picture in two splits)", report.leaks)
    print(f"\nSuspect labels ({len(report.suspect_labels)}), most suspicious first:")
    for s in report.suspect_labels:
        print(f"  {s['path']}: filed as {s['given']}, looks like {s['suggested']} ({s['confidence']:.0%} sure)")
    print(f"\nQuality ({len(report.quality)}):")
    for q in report.quality:
        print(f"  {q['path']}: {q['problem']}")
    for note in report.notes:
        print(f"\nNote: {note}")
    return 0


def _print_groups(title: str, groups: list[list[str]]) -> None:
    print(f"\n{title} ({len(groups)}):")
    for group in groups:
        print("  " + "  =  ".join(group))


def cmd_evaluate(args) -> int:
    from .held_out import evaluate_folder

    result = evaluate_folder(args.run_dir, args.folder, device=args.device)
    if args.json:
        keys = (
            "accuracy",
            "ci95",
            "n",
            "per_class",
            "confusion",
            "classes",
            "macro_f1",
            "unknown_classes",
            "unreadable",
        )
        print(json.dumps({k: result[k] for k in keys}))
        return 0
    print(f"accuracy {result['accuracy']:.3f} on {result['n']} pictures. {result['words']}")
    for row in result["per_class"]:
        print(
            f"  {row['class']:<20} precision {row['precision']:.2f}  recall {row['recall']:.2f}  "
            f"F1 {row['f1']:.2f}  ({row['support']} pictures)"
        )
    for name, count in result["unknown_classes"].items():
        print(f"  not counted: {count} pictures in '{name}', a class this model does not know")
    for bad in result["unreadable"]:
        print(f"  not counted: {bad['path']} ({bad['error']})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="find copies, leaks between splits, suspect labels and poor pictures")
    p.add_argument("data_dir", type=pasted_path)
    p.add_argument("--backbone", default=None, help="network whose features compare the pictures")
    p.add_argument("--folds", type=int, default=5, help="folds of the label check")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--json", action="store_true", help="one JSON object: duplicates, conflicts, leaks, suspect_labels, quality"
    )
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("evaluate", help="score a run on new labelled pictures (one subfolder per class)")
    p.add_argument("run_dir", type=pasted_path)
    p.add_argument("folder", type=pasted_path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="one JSON object: accuracy, ci95, n, per_class, confusion")
    p.set_defaults(func=cmd_evaluate)
