"""What travels beside an exported model: the preprocessing it expects (as
JSON), its model card (MODEL_CARD.md, in plain words for the person who will
use it) and a picture of its confusion matrix.

Split from core/export.py, which writes and checks the model files themselves
and assembles the zip from these pieces.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .adapted_run import SOURCE, changed_numbers, changes_words
from .adapted_run import card_lines as adapted_card_lines
from .adapted_run import epochs_words as adapted_epochs_words
from .blocks import block_title
from .config import strategy_words
from .evaluation import LoadedModel
from .files import atomic_write_bytes
from .freeze import freeze_plan_for
from .runs import open_run, read_json

# The exported files' interface, written into preprocessing.json and the card.
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


def preprocessing(loaded: LoadedModel) -> dict:
    """The preprocessing the app applies before the model, from the same facts
    (the backbone's sizes() and normalisation) that build the run's evaluation
    transform, so that it can never disagree with it."""
    out = {
        "color": "RGB",
        "scale": "pixel values / 255, so 0..1; then (x - mean) / std per channel",
        "layout": "NCHW float32: (batch, 3, height, width)",
    }
    info = loaded.model.info
    image_size, resize_size = info.sizes(loaded.config.get("image_size"))
    out["resize_size"] = resize_size
    out["interpolation"] = info.interpolation
    out["image_size"] = image_size
    out["mean"] = [float(v) for v in info.mean]
    out["std"] = [float(v) for v in info.std]
    out["steps"] = [
        "open the image, apply its EXIF rotation, convert to RGB",
        f"resize so the shorter side is {out.get('resize_size')} pixels ({out.get('interpolation')}, antialiased)",
        f"crop the centre {out.get('image_size')}x{out.get('image_size')} pixels",
        "scale pixel values to 0..1, subtract mean and divide by std per channel",
    ]
    out["input_name"] = INPUT_NAME
    out["output_name"] = OUTPUT_NAME
    out["output"] = "softmax probabilities, one per class, in the order of classes.json"
    return out


# --------------------------------------------------------------------------------------
# The model files
# --------------------------------------------------------------------------------------


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def confusion_png(eval_dict: dict, path: Path, cell: int | None = None) -> Path:
    """Draw the confusion matrix (rows: true, columns: predicted) as a PNG."""
    classes = list(eval_dict.get("classes", []))
    matrix = [[int(v) for v in row] for row in eval_dict.get("confusion", [])]
    n = max(1, len(classes))
    cell = cell or max(36, min(90, 640 // n))
    font, small = _font(max(11, cell // 4)), _font(13)
    label_w = max([int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(c, font=small)) for c in classes] + [40]) + 16
    top = label_w  # column labels are written vertically, so they need the same room
    margin = 40
    width, height = margin + label_w + n * cell + 20, top + n * cell + margin + 20
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    x0, y0 = margin + label_w, top
    for i in range(n):
        row_total = max(1, sum(matrix[i]) if i < len(matrix) else 1)
        for j in range(n):
            value = matrix[i][j] if i < len(matrix) and j < len(matrix[i]) else 0
            share = value / row_total
            colour = tuple(int(255 - share * (255 - c)) for c in (8, 69, 148))  # white -> dark blue
            box = (x0 + j * cell, y0 + i * cell, x0 + (j + 1) * cell, y0 + (i + 1) * cell)
            draw.rectangle(box, fill=colour, outline=(200, 200, 200))
            draw.text(
                ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2),
                str(value),
                anchor="mm",
                font=font,
                fill="white" if share > 0.5 else "black",
            )
    for i, name in enumerate(classes):
        draw.text((x0 - 8, y0 + i * cell + cell / 2), name, anchor="rm", font=small, fill="black")
        text_w = int(draw.textlength(name, font=small)) + 4
        label = Image.new("RGB", (text_w, 18), "white")
        ImageDraw.Draw(label).text((0, 2), name, font=small, fill="black")
        label = label.rotate(90, expand=True)
        img.paste(label, (int(x0 + i * cell + cell / 2 - 9), int(y0 - 6 - text_w)))
    draw.text((x0 + n * cell / 2, y0 + n * cell + 14), "predicted class", anchor="mt", font=small, fill="black")
    axis = Image.new("RGB", (120, 18), "white")
    ImageDraw.Draw(axis).text((60, 9), "true class", anchor="mm", font=small, fill="black")
    img.paste(axis.rotate(90, expand=True), (6, int(y0 + n * cell / 2 - 60)))
    buffer = _png_bytes(img)
    atomic_write_bytes(Path(path), buffer)
    return Path(path)


def _png_bytes(img: Image.Image) -> bytes:

    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


# --------------------------------------------------------------------------------------
# The model card
# --------------------------------------------------------------------------------------


def _pct(value) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def _blocks_table(loaded: LoadedModel, config: dict, status: dict) -> tuple[list[str], list[str]]:
    """Markdown rows for the blocks, and the names of the blocks that trained."""
    model = loaded.model
    counts = model.block_param_counts()
    try:
        plan = freeze_plan_for(counts, config)
    except ValueError:
        return [], []
    trained = status.get("epochs_done") or (status.get("adapted_from") or {}).get(
        "source_epochs"
    )  # an adapted run's source's
    last_epoch = max(0, int(trained or config.get("epochs") or 1) - 1)
    trained_now = plan.trained_at(last_epoch)
    rows, trained = [], []
    for name, count in counts.items():
        if count == 0:
            state = "no weights"
        elif trained_now.get(name):
            state = "trained" if plan.trained.get(name) or plan.strategy != "gradual" else "trained (unfrozen later)"
            trained.append(name)
        else:
            state = "frozen"
        lr = plan.lr_mult.get(name, 1.0)
        rate = f"{lr:.3g}x" if name in trained else "-"
        rows.append(f"| {block_title(name)} (`{name}`) | {count:,} | {state} | {rate} |")
    return rows, trained


def model_card(loaded: LoadedModel, run_dir: Path, checks: dict | None = None) -> str:
    """MODEL_CARD.md text for a run: its sections, one after the other. A
    model adapted to new pictures says so after what it does, and its epochs,
    time and device are its own (core.runs.adapted_facts)."""
    run = open_run(run_dir)
    config, scan = loaded.config, run.scan
    status, summary = run.status, run.summary()
    # Numbers as numbers and text as text, whatever a damaged status.json holds, and a kept adapted
    # model's own epochs, time and device: Run.summary's (which applies core.runs.adapted_facts).
    status = {
        **status,
        **{key: summary[key] for key in ("epochs_done", "best_epoch", "seconds", "device", "device_name")},
        **{key: v if isinstance(v := status.get(key), int) else None for key in ("trainable_params", "total_params")},
        "freeze_plan": status.get("freeze_plan") if isinstance(status.get("freeze_plan"), str) else None,
        "adapted_from": summary["adapted_from"],
    }
    evaluation = run.evaluation or {}
    info = loaded.model.info
    classes = loaded.classes
    prep = preprocessing(loaded)
    counts = scan.get("counts") or {}
    n_val = sum(int(c.get("val", 0)) for c in counts.values())
    test_eval = read_json(run.path / "test_eval.json") or {}
    lines = _card_intro(run.name, info, classes) + adapted_card_lines(status)
    lines += _card_data(scan, config, classes)
    lines += _card_model(loaded, config, status)
    lines += _card_settings(config, status, prep)
    lines += _card_evaluation(evaluation, n_val) + _card_test_split(test_eval)
    lines += ["", "## Limits", ""]
    lines += _limits(classes, counts, evaluation, info, n_val, test_eval.get("n") or 0)
    lines += _card_usage(prep, checks)
    return "\n".join(lines) + "\n"


def _card_intro(run_name: str, info, classes: list[str]) -> list[str]:
    """The title, and what the model does in one sentence."""
    return [
        f"# Model card: {info.title} for {len(classes)} classes",
        "",
        f"Run `{run_name}`, exported {time.strftime('%Y-%m-%d %H:%M')} by Transfer Studio.",
        "",
        "## What it does",
        "",
        f"It looks at a picture and says which of these {len(classes)} classes it shows, with a "
        f"probability for each: {', '.join(f'**{c}**' for c in classes)}.",
    ]


def _card_data(scan: dict, config: dict, classes: list[str]) -> list[str]:
    """The image folder, how it was split (a test/ folder kept apart too), and the images per class."""
    counts = scan.get("counts") or {}
    n_train, n_val, n_test = (sum(int(c.get(split, 0)) for c in counts.values()) for split in ("train", "val", "test"))
    folders = "train/, val/ and test/ folders" if n_test else "train/ and val/ folders"
    images = (
        f"{n_train} training images, {n_val} validation images and {n_test} test images"
        if n_test
        else f"{n_train} training images and {n_val} validation images"
    )
    lines = [
        "",
        "## Data",
        "",
        f"Trained on the image folder `{scan.get('root') or config.get('data_dir')}`: {images} "
        + (
            f"(the split came from its {folders})."
            if scan.get("split_source") == "folders"
            else f"(a random {_pct(scan.get('val_fraction'))} of each class held out, seed {scan.get('seed')})."
        ),
        "",
        "| class | training images | validation images |" + (" test images |" if n_test else ""),
        "|---|---:|---:|" + ("---:|" if n_test else ""),
    ]
    for name in classes:
        c = counts.get(name, {})
        lines.append(
            f"| {name} | {c.get('train', 0)} | {c.get('val', 0)} |" + (f" {c.get('test', 0)} |" if n_test else "")
        )
    skipped = scan.get("skipped") or []
    if skipped:
        lines += ["", f"{len(skipped)} files in the folder were left out (unreadable or not images)."]
    return lines


def _card_model(loaded: LoadedModel, config: dict, status: dict) -> list[str]:
    """The backbone, where its weights started, and which blocks trained."""
    info, classes = loaded.model.info, loaded.classes
    block_rows, trained_blocks = _blocks_table(loaded, config, status)
    frozen = [b for b, c in loaded.model.block_param_counts().items() if c and b not in trained_blocks]
    plain, technical = strategy_words(config.get("strategy"))
    init = config.get("init", "pretrained")
    start = (
        "ImageNet weights"
        if init == "pretrained"
        else "random weights (no transfer)"
        if init == "random"
        else f"weights from `{Path(str(init)).name}`"
    )
    came = status.get("adapted_from")
    there = f" (in {SOURCE})" if isinstance(came, dict) else ""  # it did not train: these describe its source
    lines = [
        "",
        "## Model",
        "",
        f"- Backbone: **{info.title}** (`{info.name}`, {info.family} family, {info.params_m}M parameters in the "
        f"original network" + (f", {info.top1:.1f}% top-1 on ImageNet" if info.top1 else "") + ").",
        f"- Started from: {start}; a new head for the {len(classes)} classes"
        + (f" (a hidden layer of {config.get('head_hidden')})" if config.get("head_hidden") else "")
        + ".",
        f"- Strategy{there}: **{plain}** ({technical}, `{config.get('strategy')}`). "
        f"{status.get('freeze_plan') or ''}".rstrip(),
        f"- Trained blocks{there}: {', '.join(map(block_title, trained_blocks)) or '-'}.",
        f"- Frozen blocks{there}: {', '.join(map(block_title, frozen)) or 'none'}.",
        f"- Trainable parameters{there}: {status.get('trainable_params', 0):,} of {status.get('total_params', 0):,}."
        if status.get("total_params")
        else f"- Trainable parameters{there}: -",
    ]
    if there:
        lines.append(
            f"- What adapting changed: {changes_words(came, came.get('changed') or changed_numbers(loaded.model))}"
        )
    if block_rows:
        during = f"during the training of {SOURCE}" if there else "during training"
        lines += ["", f"| block | parameters | {during} | learning-rate multiplier |", "|---|---:|---|---:|"]
        lines += block_rows
    return lines


def _card_settings(config: dict, status: dict, prep: dict) -> list[str]:
    """The training settings as a table; for a model adapted to new pictures,
    those of the run it was adapted from, with its own epochs (none), time and device."""
    seconds, came = status.get("seconds"), status.get("adapted_from")
    adapted = isinstance(came, dict)
    lines = [
        "",
        "## Training settings" + (" (of the run it was adapted from)" if adapted else ""),
        "",
        "| setting | value |",
        "|---|---|",
    ]
    settings = [
        (
            "epochs",
            adapted_epochs_words(came)
            if adapted
            else f"{status.get('epochs_done') or 0} done of {config.get('epochs') or '?'} (best: epoch {status.get('best_epoch') or '-'})",
        ),
        ("batch size", config.get("batch_size")),
        ("optimiser", config.get("optimizer")),
        ("learning rate", config.get("lr")),
        ("schedule", config.get("schedule")),
        ("weight decay", config.get("weight_decay")),
        ("augmentation", config.get("augment")),
        ("label smoothing", config.get("label_smoothing")),
        ("class-weighted loss", "yes" if config.get("class_weighted") else "no"),
        ("early stopping", f"patience {config['early_stopping']}" if config.get("early_stopping") else "off"),
        ("image size", f"{prep.get('image_size')}x{prep.get('image_size')}"),
        ("seed", config.get("seed")),
        ("adapted on" if adapted else "device", status.get("device_name") or status.get("device") or "not recorded"),
        (
            "adapting time" if adapted else "training time",
            f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else "-",
        ),
    ]
    return lines + [f"| {k} | {v} |" for k, v in settings]


def _card_evaluation(evaluation: dict, n_val: int) -> list[str]:
    """Accuracy, macro F1 and per-class figures on the validation images."""
    lines = ["", "## How well it does", ""]
    if not evaluation:
        return lines + ["This run has no evaluation yet (eval.json is missing)."]
    lines += [
        f"On the {evaluation.get('count', n_val)} validation images (not used for training, but used to "
        "pick the best epoch):",
        "",
        f"- Accuracy: **{_pct(evaluation.get('accuracy'))}**",
        f"- Macro F1: **{evaluation.get('macro_f1', 0):.3f}** (the F1 of each class, averaged)",
        "",
        "| class | precision | recall | F1 | validation images |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in evaluation.get("per_class", []):
        lines.append(f"| {c['class']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    return lines + [
        "",
        "Confusion matrix (rows: true class, columns: predicted class):",
        "",
        "![confusion matrix](confusion.png)",
    ]


def _card_test_split(test_eval: dict) -> list[str]:
    """The test/ pictures' score (test_eval.json), apart from validation, as the Results page gives it."""
    if not test_eval.get("n"):
        return []
    right = sum(1 for row in test_eval.get("predictions", []) if row.get("correct"))
    lines = [
        "",
        "### On the test images",
        "",
        f"On the {test_eval['n']} test images (kept apart: not used for training nor to pick the best epoch, "
        "scored once at the end of training):",
        "",
        f"- Accuracy: **{_pct(test_eval.get('accuracy'))}** ({right} of {test_eval['n']}). {test_eval.get('words', '')}".rstrip(),
        f"- Macro F1: **{test_eval.get('macro_f1', 0):.3f}**",
        "",
        "| class | precision | recall | F1 | test images |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in test_eval.get("per_class", []):
        lines.append(f"| {c['class']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    return lines


def _card_usage(prep: dict, checks: dict | None) -> list[str]:
    """How to use the exported files, and how they compared with the app's model."""
    lines = [
        "",
        "## Using the files",
        "",
        "- `model.ts` (TorchScript): `torch.jit.load('model.ts')`, then call it on a tensor.",
        f"- `model.onnx` (ONNX opset {ONNX_OPSET}): e.g. with onnxruntime; input `{INPUT_NAME}`, output `{OUTPUT_NAME}`, any batch size.",
        "- Input: a float32 tensor (batch, 3, "
        f"{prep.get('image_size')}, {prep.get('image_size')}), prepared as in `preprocessing.json`: "
        f"shorter side resized to {prep.get('resize_size')} ({prep.get('interpolation')}), centre crop "
        f"{prep.get('image_size')}, RGB scaled to 0..1, then normalised with mean {prep.get('mean')} and std {prep.get('std')}.",
        "- Output: the probability of each class, in the order of `classes.json`.",
        "- `predict.py` does all of this with onnxruntime, Pillow and NumPy: `python predict.py picture.jpg` "
        "(or a folder: every picture inside it; a file it cannot read is named and the others go on).",
    ]
    if checks:
        lines += [
            "",
            f"Checked when exported, on {checks.get('images', 0)} validation images against the app's own model:",
        ]
        for name, title in (("torchscript", "TorchScript"), ("onnx", "ONNX")):
            check = checks.get(name)
            if check and check.get("checked"):
                same = "the same top class" if check["same_top_class"] else "a DIFFERENT top class on some images"
                lines.append(f"- {title}: {same}; probabilities differ by at most {check['max_abs_difference']:.1e}.")
            elif check:
                lines.append(f"- {title}: not checked ({check.get('why')}).")
    return lines


def _limits(classes, counts, evaluation, info, n_val, n_test=0) -> list[str]:
    measured = f"{n_val} validation images" + (f" and {n_test} test images" if n_test else "")
    lines = [
        f"- It only knows these {len(classes)} classes. Shown anything else, it still picks one of them, "
        "often with high confidence.",
        f"- Its accuracy was measured on only {measured} from the same folder as the training "
        "images. Expect it to do worse on pictures taken differently (other cameras, light, backgrounds, "
        "angles, drawings instead of photos).",
    ]
    small = [name for name in classes if int((counts.get(name) or {}).get("train", 0)) < 50]
    if small:
        lines.append(
            f"- Few training images for {', '.join(small)} (under 50 each): treat these classes with extra care."
        )
    per_class = evaluation.get("per_class") or []
    if per_class:
        weakest = min(per_class, key=lambda c: c["recall"])
        if weakest["recall"] < 0.999:
            lines.append(
                f"- Weakest class on validation: {weakest['class']} (found {_pct(weakest['recall'])} "
                "of its images). Look at the confusion matrix to see what it is mistaken for."
            )
    if n_val < 100:
        lines.append(
            f"- With {n_val} validation images, one image more or less right moves accuracy by "
            f"{100 / max(1, n_val):.1f} points: the numbers above are rough."
        )
    lines += [
        f"- The backbone ({info.title}) was pretrained on ImageNet photos and carries that data's gaps and biases.",
        "- Confidence is not certainty: a probability of 0.9 does not mean it is right 9 times in 10.",
        "- Do not use it for decisions about people, health, safety or money.",
    ]
    return lines


# --------------------------------------------------------------------------------------
# The standalone example
# --------------------------------------------------------------------------------------
