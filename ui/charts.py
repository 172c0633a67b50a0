"""Every chart the pages draw, as plotly figures: training curves, class
counts, the confusion matrix (clickable), the model's top classes, the
embedding scatter and the comparison curves. The engine (`core`) gives the
numbers and knows nothing of plotly. Plotly reads a subset of HTML in every
text, so each name a user made goes in through `words.chart_text`."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from urllib.parse import quote

import plotly.graph_objects as go

from core.counts import rate_text
from core.scan_report import ScanReport
from ui.words import chart_text

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
TEST_COLOR = "#2ca02c"  # the held-out test/ pictures
BATCH_COLOR = "rgba(31, 119, 180, 0.3)"
CLASS_COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]  # a colour per class (or per run), in plotly's default order


def _layout(fig: go.Figure, title: str, y_title: str, height: int = 320) -> go.Figure:
    fig.update_layout(
        title=title,
        height=height,
        margin=dict(l=10, r=10, t=50, b=10),
        xaxis_title="epoch",
        yaxis_title=y_title,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
    )
    return fig


def loss_figure(
    history: list[dict], batch_losses: list | None = None, steps_per_epoch: int | None = None, epochs: int | None = None
) -> go.Figure:
    fig = go.Figure()
    if batch_losses and steps_per_epoch:
        fig.add_trace(
            go.Scatter(
                x=[s / steps_per_epoch for s, _ in batch_losses],
                y=[loss for _, loss in batch_losses],
                mode="lines+markers" if len(batch_losses) < 8 else "lines",  # the first points show as dots
                marker=dict(size=4),
                name="train (each batch)",
                line=dict(color=BATCH_COLOR, width=1),
            )
        )
    _per_epoch(fig, history, "loss", 1, epochs)
    _layout(fig, "Loss (lower is better)", "loss")
    fig.update_yaxes(rangemode="tozero")
    return fig


def _per_epoch(fig: go.Figure, history: list[dict], measure: str, scale: float, epochs: int | None) -> None:
    """The training and validation pictures' `measure` after each epoch, and
    an x axis over `epochs` (whole epochs where they are few)."""
    for split, name, color in (("train", "train", TRAIN_COLOR), ("val", "validation", VAL_COLOR)):
        fig.add_trace(
            go.Scatter(
                x=[r["epoch"] for r in history],
                y=[scale * r[f"{split}_{measure}"] for r in history],
                mode="lines+markers",
                name=name,
                line=dict(color=color),
            )
        )
    if epochs:
        fig.update_xaxes(range=[0, max(epochs, 1) + 0.1], dtick=1 if epochs <= 20 else None)


def epoch_axis(history: list[dict], planned: int | None, running: bool) -> int | None:
    """How many epochs the curves' x axis spans: the planned ones while the
    run goes on (the curves show how far it has come), the ones it did once
    it has ended (a run stopped at 5 of 100 epochs fills the chart)."""
    if running:
        return planned
    return max((r["epoch"] for r in history), default=None) or planned


def accuracy_figure(history: list[dict], epochs: int | None = None) -> go.Figure:
    fig = go.Figure()
    _per_epoch(fig, history, "accuracy", 100, epochs)
    _layout(fig, "Accuracy (higher is better)", "% correct")
    fig.update_yaxes(range=[0, 101])
    return fig


def class_counts_figure(report: ScanReport) -> go.Figure:
    classes = report.classes
    shown = [chart_text(c) for c in classes]
    fig = go.Figure()
    splits = [("train", "for training", TRAIN_COLOR), ("val", "for checking (validation)", VAL_COLOR)]
    if report.test:  # a test/ folder: scored once, at the end of a run
        splits.append(("test", "for the final test", TEST_COLOR))
    for split, name, color in splits:
        counts = [report.counts[c].get(split, 0) for c in classes]
        fig.add_trace(go.Bar(x=shown, y=counts, name=name, marker_color=color, text=counts))
    fig.update_layout(
        barmode="group",
        title="Pictures per class",
        height=320,
        margin=dict(l=10, r=10, t=50, b=10),
        yaxis_title="pictures",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
    )
    return fig


def top_classes_figure(top: list) -> go.Figure:
    names = [chart_text(c) for c, _ in top][::-1]
    probs = [100 * p for _, p in top][::-1]
    colors = ["#c7c7c7"] * (len(names) - 1) + [VAL_COLOR]
    fig = go.Figure(
        go.Bar(
            x=probs,
            y=names,
            orientation="h",
            marker_color=colors,
            text=[f"{p:.1f}%" if p >= 0.05 else "under 0.1%" for p in probs],  # a bare 0.0% read as a gap
            textposition="auto",
        )
    )
    fig.update_layout(
        title="How sure the model is",
        height=80 + 45 * len(names),
        margin=dict(l=10, r=10, t=50, b=10),
        xaxis=dict(range=[0, 100], title="probability (%)"),
    )
    return fig


def confusion_figure(eval_dict: dict, normalize: bool = False):
    """The confusion matrix as a plotly heatmap (rows: true class, columns:
    predicted). normalize=True shows each row as shares of that class's images.
    Each cell's customdata is [true index, predicted index, count] so a page
    can map a click back to cell_images."""
    classes = [chart_text(c) for c in eval_dict.get("classes", [])]
    counts = [[int(v) for v in row] for row in eval_dict.get("confusion", [])]
    # An empty square says nothing: a hundred zeros of ten classes hid the few mistakes among them.
    if normalize:
        values = [[v / max(1, sum(row)) for v in row] for row in counts]
        text = [[f"{v:.0%}<br>({c})" if c else "" for v, c in zip(vrow, crow)] for vrow, crow in zip(values, counts)]
    else:
        values = counts
        text = [[str(c) if c else "" for c in row] for row in counts]
    custom = [[[i, j, counts[i][j]] for j in range(len(classes))] for i in range(len(classes))]
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=classes,
            y=classes,
            text=text,
            texttemplate="%{text}",
            customdata=custom,
            colorscale="Blues",
            showscale=False,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata[2]} images<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis_title="predicted class",
        yaxis_title="true class",
        # The squares edge to edge, the first class at the top (clickable_confusion's points would pad the axes).
        xaxis_range=[-0.5, len(classes) - 0.5],
        yaxis_range=[len(classes) - 0.5, -0.5],
        # A long class name shortened at the axis (the hover and the choosers have it whole): "long-sleeved
        # shirts and sweaters" took a third of the chart's width and squeezed the squares.
        xaxis=dict(tickvals=classes, ticktext=[_tick(c) for c in eval_dict.get("classes", [])]),
        yaxis=dict(tickvals=classes, ticktext=[_tick(c) for c in eval_dict.get("classes", [])]),
        margin=dict(l=10, r=10, t=30, b=10),
    )
    return fig


TICK_CHARS = 16  # a class's name at a confusion matrix's axis


def _tick(name) -> str:
    """A class's name for an axis, at most TICK_CHARS characters."""
    name = str(name)
    return chart_text(name if len(name) <= TICK_CHARS else name[: TICK_CHARS - 1].rstrip() + "…")


BESIDE_CLASSES = 6  # a confusion matrix of up to this many classes leaves room beside it; a larger one takes the page


def matrix_beside(classes: list) -> bool:
    """Whether a confusion matrix of `classes` is drawn with its choosers beside it (few classes) or takes the
    page's whole width, its choosers below (at 1024 px, ten classes beside them were squares 14 px wide)."""
    return len(classes) <= BESIDE_CLASSES


def matrix_height(classes: list, most: int = 700) -> int:
    """A confusion matrix's height in px: its squares about as tall as wide."""
    return min(most, 160 + 60 * len(classes))


def clickable_confusion(fig: go.Figure, evaluation: dict) -> go.Figure:
    """Streamlit reports clicks on points, not on heatmap squares: lay an
    invisible point on the centre of every square, carrying the same
    [true, predicted, count], and let a click anywhere pick the nearest
    centre (which is the square under the pointer)."""
    classes = [chart_text(c) for c in evaluation["classes"]]
    counts = evaluation["confusion"]
    cells = [(i, j) for i in range(len(classes)) for j in range(len(classes))]
    invisible = dict(opacity=0)
    fig.add_trace(
        go.Scatter(
            x=[classes[j] for _, j in cells],
            y=[classes[i] for i, _ in cells],
            customdata=[[i, j, counts[i][j]] for i, j in cells],
            mode="markers",
            marker=dict(size=30, symbol="square", opacity=0),
            selected=dict(marker=invisible),
            unselected=dict(marker=invisible),
            hovertemplate="real class %{y}<br>said %{x}<br>%{customdata[2]} pictures<extra></extra>",
            showlegend=False,
        )
    )
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector=dict(type="heatmap"))
    fig.update_layout(hoverdistance=-1, hovermode="closest", clickmode="event+select")
    return fig


def most_confused(evaluation: dict) -> tuple[int, int]:
    """The square with the most mistakes, or the first class's right answers."""
    confusion = evaluation["confusion"]
    best, cell = 0, (0, 0)
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            if i != j and count > best:
                best, cell = count, (i, j)
    return cell


def clicked_cell(event, classes: list[str]) -> tuple[int, int] | None:
    """The square a click (or selection) on the heatmap chose."""
    points = (getattr(event, "selection", None) or {}).get("points") or []
    for point in points:
        custom = point.get("customdata")
        if isinstance(custom, (list, tuple)) and len(custom) >= 2:
            return int(custom[0]), int(custom[1])
        if point.get("y") in classes and point.get("x") in classes:
            return classes.index(point["y"]), classes.index(point["x"])
    return None


def embedding_figure(rows: list[dict], classes: list[str], title: str) -> go.Figure:
    fig = go.Figure()
    for i, name in enumerate(classes):
        points = [r for r in rows if r["true"] == name]
        fig.add_trace(
            go.Scatter(
                x=[r["x"] for r in points],
                y=[r["y"] for r in points],
                mode="markers",
                name=chart_text(name),
                marker=dict(color=CLASS_COLORS[i % len(CLASS_COLORS)], size=8, opacity=0.8),
                text=[chart_text(Path(r["path"]).name) for r in points],
                hovertemplate="%{text}<extra>" + chart_text(name) + "</extra>",
            )
        )
    fig.update_layout(
        title=title,
        height=480,
        margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(showticklabels=False, title=None, zeroline=False),
        yaxis=dict(showticklabels=False, title=None, zeroline=False),
        legend=dict(orientation="h", yanchor="top", y=-0.02, xanchor="left", x=0),
    )
    return fig


LEGEND_CHAR_PX = 6.0  # a legend's 11 px text, about 5 px a character in Chromium; 6 to be safe
LEGEND_LINE_PX = 19  # one line of it, with the space between entries
LEGEND_SYMBOL_PX = 50  # the line sample before each entry, and its padding
SPLIT_WORDS = {"val": "validation pictures", "train": "training pictures"}


def legend_chars(chart_px: int) -> int:
    """How many characters of a legend's line fit a chart `chart_px` wide."""
    return max(16, int((chart_px - LEGEND_SYMBOL_PX) / LEGEND_CHAR_PX))


def wrapped(text: str, chars: int) -> str:
    """`text` for a plotly chart, on lines of at most `chars` characters (broken between words)."""
    return "<br>".join(chart_text(line) for line in textwrap.wrap(str(text), chars, break_on_hyphens=False) or [""])


def run_colours(runs: list[str]) -> dict[str, str]:
    """{run name: its colour} for the runs compared, in the order given: its lines in the comparison charts
    (curves_figure) and its mark in the leaderboard (line_mark) are this colour."""
    return {run: CLASS_COLORS[i % len(CLASS_COLORS)] for i, run in enumerate(dict.fromkeys(runs))}


MARK_PX = 28  # a line mark's width: a 44 px column less its padding


def line_mark(colour: str, row_px: int = 35) -> str:
    """A short line in `colour` with a dot on it, as the charts draw a run's validation curve, for a table's
    image column (st.column_config.ImageColumn takes an SVG as a data URL) in rows `row_px` tall. The table
    scales a picture to its row's height: the mark's picture is as tall as the row, the mark itself small in
    its middle (a 40 x 16 picture in a 66 px row was a disc wider than its column)."""
    high, middle = max(12, row_px - 6), max(12, row_px - 6) / 2
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{MARK_PX}' height='{high}' viewBox='0 0 {MARK_PX} {high}'>"
        f"<line x1='2' y1='{middle}' x2='{MARK_PX - 2}' y2='{middle}' stroke='{colour}' stroke-width='3' "
        f"stroke-linecap='round'/><circle cx='{MARK_PX / 2}' cy='{middle}' r='4.5' fill='{colour}'/></svg>"
    )
    return "data:image/svg+xml;utf8," + quote(svg)


def curves_figure(rows: list[dict], kind: str = "accuracy", chars: int = 60, colours: dict[str, str] | None = None):
    """A plotly line chart of curves() rows for one kind ("loss" or "accuracy"):
    a colour per run (`colours`, run_colours: the leaderboard's marks; by
    default in the rows' order), solid for validation, dotted for training.
    The legend has one entry per run, its label on lines of at most `chars`
    characters (a long one ran off a narrow chart); a click on it hides or
    shows both the run's lines, and hovering a point names the run in full."""
    fig = go.Figure()
    colours = colours or run_colours([r["run"] for r in rows])
    labels = {r["run"]: r["label"] for r in rows}
    last_epoch = max((r["epoch"] for r in rows), default=1)
    value = "%{y:.1f}%" if kind == "accuracy" else "%{y:.3f}"
    for i, (run, label) in enumerate(labels.items()):
        in_legend = True
        for split, dash in (("val", "solid"), ("train", "dot")):
            points = sorted(
                (r["epoch"], r["value"]) for r in rows if r["run"] == run and r["kind"] == kind and r["split"] == split
            )
            if points:
                fig.add_trace(
                    go.Scatter(
                        x=[p[0] for p in points],
                        y=[p[1] for p in points],
                        mode="lines+markers" if len(points) <= 30 else "lines",  # many dots make a smear
                        name=wrapped(label, chars),
                        legendgroup=f"run{i}",
                        showlegend=in_legend,
                        line=dict(color=colours.get(run, CLASS_COLORS[i % len(CLASS_COLORS)]), dash=dash),
                        hovertemplate=f"{chart_text(label)}<br>{SPLIT_WORDS[split]}, "
                        f"epoch %{{x}}: {value}<extra></extra>",
                    )
                )
                in_legend = False
    fig.update_layout(xaxis_title="epoch", yaxis_title=kind, margin=dict(l=10, r=10, t=30, b=10))
    # One tick per epoch only while they fit: 100 epochs of ticks are an unreadable smear.
    fig.update_xaxes(dtick=1 if last_epoch <= 20 else None)
    return fig


def legend_lines(fig: go.Figure) -> int:
    """How many lines a figure's legend entries take, each on its own row (at most)."""
    return sum(str(t.name).count("<br>") + 1 for t in fig.data if t.showlegend is not False)


def lr_find_figure(result: dict) -> go.Figure:
    """The learning-rate finder's curve: each step's loss and the smoothed one
    against the rate (log axis), the stretch where the loss keeps falling
    shaded, the suggestion and the steepest fall marked. Their labels sit one
    at the top and one at the bottom of the chart, so two close rates never
    print over each other; the axis reads 1e-5, 1e-4 ... (plotly's default is
    "10μ"). The loss axis starts at 0, so each step's loss stays in sight as it
    falls; it ends a little above the smoothed loss's start, or above four
    times its lowest (where the sweep calls it blown up): a blow-up beyond that
    is cut off, and the title says so."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=result["lrs"], y=result["raw_losses"], mode="lines", name="each step", line=dict(color=BATCH_COLOR)
        )
    )
    fig.add_trace(
        go.Scatter(x=result["lrs"], y=result["losses"], mode="lines", name="smoothed", line=dict(color=TRAIN_COLOR))
    )
    falling = result.get("falling")
    if falling and falling[0] < falling[1]:
        fig.add_vrect(x0=falling[0], x1=falling[1], fillcolor="#2ca02c", opacity=0.08, line_width=0, layer="below")
    # Each label beside its line, on the side away from the other line, one at the top and one at the
    # bottom: close rates never print over each other. (An annotation on a log axis takes log10 of the
    # rate; add_vline's own annotation_text puts the raw rate there, near 10**0 = 1, for both.)
    left_first = result["suggestion"] <= result["steepest"]
    for lr, name, color, y, away in (
        (result["suggestion"], "suggested", "#2ca02c", 1.0, "right" if left_first else "left"),
        (result["steepest"], "steepest", "#d62728", 0.0, "left" if left_first else "right"),
    ):
        fig.add_vline(x=lr, line=dict(color=color, dash="dash"))
        fig.add_annotation(
            x=math.log10(lr),
            xref="x",
            y=y,
            yref="y domain",
            yanchor="top" if y else "bottom",
            xanchor=away,
            text=f"{name} {rate_text(lr)}",
            showarrow=False,
            font=dict(color=color),
            bgcolor="rgba(255,255,255,0.8)",
        )
    smooth = result["losses"]
    top = 1.2 * max(smooth[0], min(max(smooth), 4 * min(smooth)))
    title = "Loss as the learning rate grows"
    if max(result["raw_losses"] + smooth) > top:
        title += f"<br><sup>losses above {top:.2g} run off the top of the chart</sup>"
    _layout(fig, title, "loss")
    decades = range(math.floor(math.log10(min(result["lrs"]))), math.ceil(math.log10(max(result["lrs"]))) + 1)
    ticks = [10.0**d for d in decades]  # one per power of ten, written 0.001 or 1e-5, not "1m" or "10μ"
    fig.update_xaxes(type="log", title="learning rate", tickvals=ticks, ticktext=[rate_text(t) for t in ticks])
    fig.update_traces(hovertemplate="rate %{x:.1e}<br>loss %{y:.3f}<extra></extra>")
    fig.update_yaxes(range=[0, top])
    return fig
