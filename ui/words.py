"""Words for people: names shown as text, numbers, durations, run states,
backbone and strategy names, and one line naming a run. (Error texts come from
`core.errors.friendly`, the one place for them.)"""

from __future__ import annotations

import html
import math
import re
import time
from pathlib import Path

from core.backbones import get_backbone

# Characters that make markup inside a line of Streamlit markdown: emphasis,
# code, links and images ([ ]), raw HTML (< >), entities (&), strikethrough,
# maths ($), tables (|) and the backslash itself.
_MARKDOWN_MARKUP = re.compile(r"([\\`*_\[\]<>~$|&])")
# At the start of a line these begin a heading, quote or list.
_LINE_START = re.compile(r"^(\s*\d*)([-+#>.)])")


def md_text(name) -> str:
    """A name (a class, a file, a folder: anything a user made) as plain text
    inside st.markdown: `[click](x)` stays those characters, never a link."""
    text = " ".join(str(name).splitlines())
    text = _MARKDOWN_MARKUP.sub(r"\\\1", text)
    return _LINE_START.sub(r"\1\\\2", text)


def chart_text(name) -> str:
    """A name as plain text in a plotly chart (axis ticks, legend, hover, bar
    text), where plotly reads a subset of HTML: `<b>bold` stays those characters."""
    return html.escape(str(name), quote=False)


PRESETS = {
    "linear": "Linear probe",
    "last": "Last blocks",
    "full": "Full fine-tune",
    "gradual": "Gradual unfreezing",
    "discriminative": "Discriminative rates",
    "custom": "My own choice",
}

PRESET_HELP = {
    "linear": "Only the new head learns; the pretrained network is a fixed feature extractor. Fastest, and very good with few pictures.",
    "last": "The new head and the last few pretrained blocks learn; the earlier blocks stay frozen.",
    "full": "Every block learns. Slowest; needs more pictures and a smaller learning rate.",
    "gradual": "Starts with only the head; one more block unfreezes, from the top down, every few epochs.",
    "discriminative": "Every block learns, the earlier (more general) blocks at smaller learning rates.",
    "custom": "You switched blocks on or off yourself.",
}


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
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.0f} k"
    return f"{int(n)}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
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


def fmt_when(ts: float | None) -> str:
    return "–" if not ts else time.strftime("%d %b %H:%M", time.localtime(ts))


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


def strategy_label(strategy: str | None) -> str:
    if not strategy:
        return "?"
    if strategy.startswith("last-"):
        n = strategy.split("-", 1)[1]
        return f"last {n} block{'s' if n != '1' else ''}"
    return {"linear": "linear probe", "custom": "own choice of blocks"}.get(
        strategy, PRESETS.get(strategy, strategy).lower()
    )


def run_label(run, with_accuracy: bool = True) -> str:
    """One line naming a run. A select widget remembers its choice by this
    text, so a widget whose runs may still be training passes
    with_accuracy=False (the accuracy changes every epoch)."""
    s = run.summary()
    acc = s.get("best_val_accuracy")
    acc_text = f" · {fmt_pct(acc)}" if with_accuracy and acc is not None and acc >= 0 else ""
    data = Path(s["data"]).name if s.get("data") else "?"
    return f"{s['run']} · {backbone_title(s['backbone'])} · {strategy_label(s['strategy'])} · {data}{acc_text}"


CAM_CAPTION = (
    "The colours show **where the model looked**: red and yellow are the parts of the picture that pushed it "
    "towards its answer, blue the parts that hardly mattered (Grad-CAM)."
)
