"""Words for people: names shown as text, numbers, durations, run states,
backbone and strategy names, and one line naming a run. (Error texts come from
`core.errors.friendly`, the one place for them.)"""

from __future__ import annotations

import html
import json
import math
import re
import time
from collections import Counter
from pathlib import Path

from core.backbones import get_backbone
from core.blocks import block_title
from core.config import LEGACY, STRATEGY_WORDS, resolve_augment, setting_label, settings_without_effect, strategy_words
from core.counts import how_many
from core.runs import ACTIVE_STATES

# Characters that make markup inside a line of Streamlit markdown: emphasis,
# code, links and images ([ ]), raw HTML (< >), entities (&), strikethrough,
# maths ($), tables (|) and the backslash itself.
_MARKDOWN_MARKUP = re.compile(r"([\\`*_\[\]<>~$|&])")
# At the start of a line these begin a heading, quote or list.
_LINE_START = re.compile(r"^(\s*\d*)([-+#>.)])")
# A web address: markdown turns it into a link by itself, so an escape inside
# it would become part of the address (`/~kriz/` opening as `/%5C~kriz/`).
# Only the characters an address may hold without other meaning inside one
# are kept as they are (an underscore in a link is no emphasis); `*`, `$`,
# brackets and the rest end it and are escaped as text.
_WEB_ADDRESS = re.compile(r"https?://[A-Za-z0-9._~:/?#@!&'+,;=%-]+[A-Za-z0-9/~#=_-]")


def md_text(name) -> str:
    """A name (a class, a file, a folder: anything a user made) as plain text
    inside st.markdown: `[click](x)` stays those characters, never a link."""
    text = " ".join(str(name).splitlines())
    pieces, start = [], 0
    for address in _WEB_ADDRESS.finditer(text):
        pieces += [_MARKDOWN_MARKUP.sub(r"\\\1", text[start : address.start()]), address.group()]
        start = address.end()
    text = "".join(pieces) + _MARKDOWN_MARKUP.sub(r"\\\1", text[start:])
    return _LINE_START.sub(r"\1\\\2", text)


def chart_text(name) -> str:
    """A name as plain text in a plotly chart (axis ticks, legend, hover, bar
    text), where plotly reads a subset of HTML: `<b>bold` stays those characters."""
    return html.escape(str(name), quote=False)


def middle_cut(text, chars: int) -> str:
    """`text` in at most `chars` characters: whole when it fits, else its
    start and its end (where a file's name and kind are) around "…":
    "hat/IMG_2023…_final.jpg"."""
    text = " ".join(str(text).splitlines())
    if len(text) <= chars:
        return text
    tail = max(1, (chars - 1) // 2)
    return text[: max(1, chars - 1 - tail)] + "…" + text[-tail:]


# The Model page's strategy presets ("last" is last-N with its own slider),
# named and explained by core.config.STRATEGY_WORDS.
PRESETS = {
    preset: strategy_words(preset)[0] for preset in ("linear", "last", "full", "gradual", "discriminative", "custom")
}
PRESET_TECHNICAL = {preset: strategy_words(preset)[1] for preset in PRESETS}
PRESET_HELP = {preset: STRATEGY_WORDS["last-N" if preset == "last" else preset][2] for preset in PRESETS}

# F1 in one line, wherever it appears (Results, Compare, Runs, held-out checks).
F1_LINE = (
    "**F1** balances finding a class's pictures (recall) against being right when naming it (precision); "
    "**macro F1** is the average over classes, so a small class counts as much as a big one."
)
F1_LABEL = "Balanced score"  # macro F1 where a column needs a plain name (its help says which)
F1_HELP = "Macro F1, from 0 to 1 (1 is perfect). " + F1_LINE.replace("**", "")


def f1_caption(macro_f1: float) -> str:
    """The macro F1 under a table of per-class scores: its plain name, its own name and what it means."""
    return f"{F1_LABEL} (macro F1): {macro_f1:.2f}, where 1 is perfect. {F1_LINE}"


def fmt_params(n: int | float | None) -> str:
    if n is None:
        return "?"
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f} million"
    if n >= 1e4:
        return f"{n / 1e3:.0f} thousand"
    return f"{int(n):,}"


def fmt_short(n: int | float) -> str:
    """A count in two or three figures: 2.6 k, 645 k, 2.3 M (not "3 k" beside an exact 2,562)."""
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k" if n < 1e4 else f"{n / 1e3:.0f} k"
    return f"{int(n)}"


def fmt_time_left(snap: dict) -> str:
    """A job's time left: "1 min 05 s", "at least 31 s" while more blocks
    are still to join in (their epochs are slower), or "–"."""
    eta = snap.get("eta_seconds")
    if eta is None:
        return "–"
    return f"at least {fmt_duration(eta)}" if snap.get("eta_at_least") else fmt_duration(eta)


def fmt_duration(seconds: float | None) -> str:
    """A duration as people say it: "0.3 s" (a tiny training took that: rounded to
    whole seconds it read "0 s"), "45 s", "2 min 05 s", "1 h 03 min"; "–" when unknown."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    if 0 < seconds < 0.95:  # below what rounds to 1 s: tenths, at least one
        return f"{max(seconds, 0.1):.1f} s"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def fmt_when(ts: float | None, pattern: str = "%d %b %H:%M") -> str:
    """A moment as a date and time; "–" when unknown or not a moment this computer can say (a damaged file's)."""
    try:
        return "–" if not ts else time.strftime(pattern, time.localtime(ts))
    except (OverflowError, OSError, TypeError, ValueError):
        return "–"


STATE_WORDS = {
    "queued": "waiting",
    "running": "training",
    "stopping": "stopping",
    "stopped": "stopped",
    "finished": "finished",
    "failed": "failed",
    "interrupted": "interrupted",
}

STATE_ICONS = {
    "queued": ":material/hourglass_top:",
    "running": ":material/directions_run:",
    "stopping": ":material/pan_tool:",
    "stopped": ":material/stop_circle:",
    "finished": ":material/check_circle:",
    "failed": ":material/error:",
    "interrupted": ":material/warning:",
}


def state_word(state: str | None) -> str:
    """Plain words, for tables."""
    return STATE_WORDS.get(state or "", state or "?")


def state_label(state: str | None) -> str:
    """An icon and words, for markdown."""
    return f"{STATE_ICONS.get(state or '', '')} {state_word(state)}".strip()


def backbone_title(name: str | None) -> str:
    try:
        return get_backbone(name).title
    except (ValueError, TypeError):
        return str(name)


OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
INIT_WORDS = {"pretrained": "ImageNet weights", "random": "random weights"}  # as the Model page offers them
# A setting's value as the Model page words it, where the saved value is a code.
_VALUE_WORDS = {
    "backbone": backbone_title,
    "strategy": lambda v: strategy_words(v)[0],
    "init": lambda v: INIT_WORDS.get(v, str(v)),
    "trained_blocks": lambda v: (", ".join(block_title(b) for b, on in v.items() if on) or "none") if v else "—",
    "image_size": lambda v: f"{v}×{v}" if v else "the network's own",
    "batch_size": lambda v: str(v) if v else "auto (chosen for this machine)",
    "num_workers": lambda v: str(v) if v is not None else "chosen for this machine",
    "optimizer": lambda v: OPTIMIZER_NAMES.get(v, str(v)),
    "head_hidden": lambda v: f"{v} units" if v else "none (one straight layer)",
    "cache_dir": lambda v: str(v) if v else "the app's own",
}


def setting_value(name: str, value) -> str:
    """A run's saved setting as a person reads it: a network's title, not
    its code name; "on"/"off", not True/False; 0.0001, not 1e-04."""
    if value is None and name not in _VALUE_WORDS:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if name in _VALUE_WORDS:
        try:
            return _VALUE_WORDS[name](value)
        except (AttributeError, TypeError, ValueError):  # a damaged or older config: its value as it is
            return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def strategy_label(strategy: str | None) -> str:
    """A strategy on one line (tables, select boxes): what it does, then its
    technical name in brackets."""
    plain, technical = strategy_words(strategy)
    return f"{plain} ({technical})" if technical else plain


def strategy_md(strategy: str | None) -> str:
    """A strategy inside a markdown sentence: what it does in bold, then its
    technical name in brackets."""
    plain, technical = strategy_words(strategy)
    return f"**{md_text(plain)}** ({md_text(technical)})" if technical else f"**{md_text(plain)}**"


def strategy_lines(strategy: str | None) -> str:
    """A strategy in markdown: what it does, and its technical name as a
    second, quieter line."""
    plain, technical = strategy_words(strategy)
    return f"{md_text(plain)}  \n:gray[{md_text(technical)}]" if technical else md_text(plain)


ADAPTED = "adapted to new pictures"  # how a kept adapted model (core.adapted_run) is named in lists
ADAPTED_FIRST = "Adapted · "  # before what learned, in a table's "What learned" (what_learned): read first


def what_learned(strategy: str | None, adapted: bool = False, told: str = "", label=strategy_label) -> str:
    """A runs table's "What learned" cell: ADAPTED_FIRST for a model adapted
    to new pictures, what learned (`label`: strategy_label, or the plain words
    alone where the column is narrow) and what tells the run apart from runs
    of the same network learning the same way (`told`, from run_differences),
    as the run pickers and chart legends say it."""
    return (ADAPTED_FIRST if adapted else "") + label(strategy) + (f" · {told}" if told else "")


def fmt_started(ts: float | None, seconds: bool = False, now: float | None = None) -> str:
    """When a run started, as a person placing it among their own runs says it: "today 15:09", "yesterday
    09:30", "01 Dec 15:09" ("01 Dec 2025 15:09" in another year); to the second where `seconds`; "–" when
    unknown."""
    clock = "%H:%M:%S" if seconds else "%H:%M"
    if fmt_when(ts) == "–":
        return "–"
    day, today = time.localtime(ts)[:3], time.localtime(now)[:3]
    if day == today:
        return fmt_when(ts, f"today {clock}")
    if day == time.localtime((now or time.time()) - 86_400)[:3]:
        return fmt_when(ts, f"yesterday {clock}")
    return fmt_when(ts, f"%d %b {clock}" if day[0] == today[0] else f"%d %b %Y {clock}")


def _run_lead(summary: dict, told: str) -> str:
    """What a run is and what tells it apart, first in a run's label and in a chart's legend: the network,
    the technical name of what learned (short: the plain words are in the runs tables), "adapted to new
    pictures" for an adapted model, and `told` (from run_differences)."""
    plain, technical = strategy_words(summary["strategy"])
    adapted = f" · {ADAPTED}" if summary.get("adapted_from") else ""
    return f"{backbone_title(summary['backbone'])} · {technical or plain}{adapted}" + (f" · {told}" if told else "")


def run_label(run, with_accuracy: bool = True, told: str = "", seconds: bool = False) -> str:
    """One line naming a run for a person, what tells it apart first (a multiselect's chip is cut at about
    80 characters in a 1024 px window): the network, what learned and what tells it apart from runs of
    the same network learning the same way (`told`, from run_differences; as the Compare legends begin),
    then the pictures, its best accuracy ("damaged" for a damaged run: Run.summary's reason says why, and
    the figure may be what is damaged) and when it started (fmt_started; to the second where `seconds`).
    A damaged run is never training, so the word stays while the widget lives. A select widget remembers its choice by this text, so a widget whose runs may still be
    training passes with_accuracy=False (the accuracy changes every epoch); one listing several runs
    uses run_labels, which keeps the lines apart."""
    s = run.summary()
    acc = s.get("best_val_accuracy")
    acc_text = f" · {fmt_pct(acc)}" if with_accuracy and acc is not None and acc >= 0 else ""
    if s["state"] == "damaged":  # its status.json's figure may be what is damaged, or belong to a lost model
        acc_text = " · damaged"
    data = Path(s["data"]).name if s.get("data") else "?"
    when = fmt_started(s.get("created"), seconds) if s.get("created") else s["run"]
    return f"{_run_lead(s, _epochs_it_did(s, told))} · {data}{acc_text} · {when}"


def _epochs_it_did(summary: dict, told: str) -> str:
    """`told`, for a run that ended before its last epoch (stopped, failed,
    interrupted, stopped early) with a saved epoch, with the epochs it did: "2 of 12 epochs"
    where told said "12 epochs" (the model it left has 2 behind it), added
    where told did not say them. A run still training, a finished one and
    an adapted model (no epochs of its own) keep `told` as it is."""
    done, epochs = summary.get("epochs_done"), summary.get("epochs")
    if (
        summary.get("state") in ACTIVE_STATES
        or summary.get("adapted_from")
        or not isinstance(done, int)
        or not isinstance(epochs, int)
        or not 1 <= done < epochs  # none done: no model to pick, nothing to say of it
    ):
        return told
    did = f"{done} of {how_many(epochs, 'epoch')}"
    planned = how_many(epochs, "epoch")
    parts = [p for p in told.split(", ") if p] if told else []
    if planned in parts:
        return ", ".join(did if p == planned else p for p in parts)
    return ", ".join([did, *parts]) if parts else did


def run_labels(runs, with_accuracy=True) -> dict[str, str]:
    """{run name: run_label} for a list of runs, each with the settings that
    tell it apart from the others of its network and strategy (run_differences).
    Runs whose lines would still read the same (a sweep starts several in one
    minute) say when they started to the second, and where that is the same
    too end with their folder's name: a person, and the select widget (it
    keys on the text), can tell them apart. `with_accuracy`: a bool, or a
    function of the run."""
    told = run_differences(runs)
    shown = {r.name: with_accuracy(r) if callable(with_accuracy) else with_accuracy for r in runs}
    labels = {r.name: run_label(r, shown[r.name], told[r.name]) for r in runs}
    alike = Counter(labels.values())
    labels = {
        r.name: run_label(r, shown[r.name], told[r.name], seconds=True) if alike[labels[r.name]] > 1 else labels[r.name]
        for r in runs
    }
    return _told_apart(labels, {r.name: r.name for r in runs})


def run_legends(runs) -> dict[str, str]:
    """{run name: a short line} for a chart's legend, where a run_label is
    too long to read: the network, the technical name of what learned and
    what tells it apart from runs of the same network and strategy; then,
    only where two would read alike, what differs among them of the
    pictures' folder, when the run started ("started 14:40", to the second
    where two alike started in the same minute) and the run's own folder
    name. (A start time first told nothing apart where a sweep started its
    runs in one minute.)"""
    labels, pictures, created, told = {}, {}, {}, run_differences(runs)
    for run in runs:
        s = run.summary()
        labels[run.name] = _run_lead(s, told[run.name])
        pictures[run.name] = Path(s["data"]).name if s.get("data") else "?"
        created[run.name] = s.get("created")
    labels = _told_apart(labels, pictures)
    minute = {name: fmt_when(created[name], "%H:%M") for name in labels}
    shared = Counter((labels[name], minute[name]) for name in labels)
    started = {
        name: f"started {fmt_when(created[name], '%H:%M' if shared[labels[name], minute[name]] == 1 else '%H:%M:%S')}"
        for name in labels
    }
    return _told_apart(labels, started, {r.name: r.name for r in runs})


# Runs of one network learning the same way are told apart by the settings that differ among them: those a
# person changes most first, then the rest in the Model page's order; never the ones the line says already
# (network, what learned, pictures), nor where files went or the machine it ran on (not the recipe).
_TOLD_FIRST = ("epochs", "augment", "lr", "optimizer", "schedule", "image_size", "batch_size", "init", "seed")
_NEVER_TOLD = (
    *("data_dir", "backbone", "strategy"),
    *("cache_dir", "num_workers", "device", "mixed_precision", "feature_cache", "batch_loss_every"),
)
TOLD_AT_MOST = 2  # settings in one line; "…" after them where more differ


def setting_short(name: str, value) -> str:
    """A setting and its value in a few words, where it tells runs apart:
    "10 epochs", "learning rate: 0.01", "stop early after 3 epochs without progress"."""
    if name == "epochs" and isinstance(value, int):
        return how_many(value, "epoch")
    if name == "early_stopping" and not value:
        return "never stop early"
    label = re.sub(r" \(.*\)$", "", setting_label(name))  # "(BatchNorm)", "(0 = never)": the value says it
    label = label[:1].lower() + label[1:]
    if "…" in label:
        return label.replace("…", setting_value(name, value))
    return f"{label}: {setting_value(name, value)}"


def run_differences(runs) -> dict[str, str]:
    """{run name: what tells it apart from the other runs of the same network
    learning the same way (an adapted one apart from trained ones): the
    settings that differ among them, each run's own values ("10 epochs,
    augmentation: light"); "" where no other run is like it, or nothing in
    their settings differs (then only when they started does)."""
    alike: dict[tuple, list[tuple[str, dict]]] = {}
    for run in runs:
        config = {**LEGACY, **run.config}  # a run saved before a setting existed trained as LEGACY says
        config["augment"] = resolve_augment(config.get("augment"), str(config.get("strategy")))  # "auto" as it was
        adapted = isinstance(run.status.get("adapted_from"), dict)
        # Text only in the key: a hand-edited config.json may hold a list there (the run reads as damaged).
        network, strategy = (
            v if isinstance(v, str) else None for v in (config.get("backbone"), config.get("strategy"))
        )
        alike.setdefault((network, strategy, adapted), []).append((run.name, config))
    told = {}
    for members in alike.values():
        unused = {name for _, config in members for name in settings_without_effect(config)}
        names = dict.fromkeys(name for _, config in members for name in config)
        differ = [
            name
            for name in names
            if name not in _NEVER_TOLD
            and name not in unused
            and len({json.dumps(config.get(name), sort_keys=True, default=str) for _, config in members}) > 1
        ]
        differ.sort(key=lambda name: _TOLD_FIRST.index(name) if name in _TOLD_FIRST else len(_TOLD_FIRST))
        more = " …" if len(differ) > TOLD_AT_MOST else ""
        for run_name, config in members:
            told[run_name] = ", ".join(setting_short(n, config.get(n)) for n in differ[:TOLD_AT_MOST]) + more
    return told


def _told_apart(labels: dict[str, str], *extras: dict[str, str], sep: str = " · ") -> dict[str, str]:
    """`labels` with, where two read alike, each of `extras` in turn added:
    to the lines that read alike, where it differs among them."""
    for extra in extras:
        alike: dict[str, list[str]] = {}
        for name, text in labels.items():
            alike.setdefault(text, []).append(name)
        told = {n for names in alike.values() if len({extra[n] for n in names}) > 1 for n in names}
        labels = {name: f"{text}{sep}{extra[name]}" if name in told else text for name, text in labels.items()}
    return labels


def rows_told_apart(rows: dict[str, str], created: dict[str, float | None], with_date: bool) -> dict[str, str]:
    """{run name: what to add to its row in a runs table so that a person can
    tell it from the others}: "" where its row (`rows`: each run's cells as
    shown, in one text) reads unlike any other; else when it started, to the
    second ("started 14:03:21"; with the day where `with_date`, as when the
    table leaves its Started column out), and where that is the same too,
    its folder's name."""
    clock = "%d %b %H:%M:%S" if with_date else "%H:%M:%S"
    alike = Counter(rows.values())
    shown = {
        name: f"{text} · started {fmt_when(created.get(name), clock)}"
        if alike[text] > 1 and created.get(name) and fmt_when(created.get(name)) != "–"
        else text
        for name, text in rows.items()
    }
    told = _told_apart(shown, {name: name for name in rows})  # the folder's name where that is the same too
    return {name: told[name][len(text) :].removeprefix(" · ") for name, text in rows.items()}


_OLD_PLAN_BLOCKS = re.compile(r"\(([a-z0-9_]+(?:, [a-z0-9_]+)*)\) are trained")


def plan_sentence(text: str | None) -> str:
    """A run's saved plan sentence (status.json "freeze_plan"). Runs saved
    before blocks were named for people list them as code names
    ("(stage4, final_conv) are trained"): those read as titles here."""
    return _OLD_PLAN_BLOCKS.sub(
        lambda m: f"({', '.join(block_title(b) for b in m.group(1).split(', '))}) are trained",
        text if isinstance(text, str) else "",
    )


def always_picks(classes: list[str]) -> str:
    """Beside the Playground's answer: the model cannot say "none of these"."""
    names = [f"**{md_text(c)}**" for c in classes[:6]]
    if len(classes) > 6:
        listed = ", ".join(names) + ", …"
    else:
        listed = " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)
    return (
        f"It always picks one of its {len(classes)} classes ({listed}), even for a picture of something else: "
        "how sure it is compares only these classes, so it can be very sure and still wrong."
    )


def answer_caption(row: dict) -> str:
    """Under a picture the model named (an eval.json or held-out prediction
    row): its answer and how sure, and the real class when it was wrong. The
    Results page's galleries all say it this way; the picture's place in its
    folder goes on a line of its own below."""
    sure = f"{row['confidence']:.0%} sure"
    said, true = md_text(row["predicted"]), md_text(row["true"])
    if row["correct"]:
        return f":green[:material/check: **{said}**] · {sure}"
    return f":red[:material/close: said **{said}**] ({sure}) · really **{true}**"


def square_sentence(count: int, true: str, predicted: str) -> str:
    """How many pictures one square of a confusion matrix holds, said as the Results page says it."""
    pictures = f"**{how_many(count, 'picture')}** of **{md_text(true)}**"
    if true == predicted:
        return f":green[:material/check_circle:] {pictures} the model got right."
    return f":red[:material/cancel:] {pictures} the model took for **{md_text(predicted)}**."


CAM_CAPTION = (
    "The colours show **where the model looked**: red and yellow are the parts of the picture that pushed it "
    "towards its answer, blue the parts that hardly mattered (Grad-CAM)."
)


def stopped_words(snap: dict, where: str = "from the Runs page") -> str:
    """Why it stopped and, once an epoch has finished, where to resume it (`where`), said
    once ("Stopped. Stopped by you. … you can resume it. Resume it …" said it twice)."""
    reason = snap.get("reason") or ""
    text = reason if reason.startswith("Stopped") else f"**Stopped.** {reason}".strip()
    if not snap["history"]:
        return text
    if "you can resume it." in text:
        return text.replace("you can resume it.", f"you can resume it {where}.")
    return f"{text} Resume it {where}."


def why_this_epoch(history: list[dict] | None, result: dict) -> str:
    """Where an earlier epoch got as many right (the chart shows it first),
    why the kept one is later: among equals, the surer one is kept. Empty
    otherwise. Starts with a space: it follows a sentence."""
    best, accuracy = result.get("best_epoch"), result.get("val_accuracy")
    first = next((r["epoch"] for r in history or [] if r.get("val_accuracy") == accuracy), None)
    if first is None or best is None or first >= best:
        return ""
    return (
        f" Epoch {first} already got as many right; epoch {best} is kept because it was surer of its answers "
        "(a lower validation loss)."
    )
