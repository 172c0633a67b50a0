"""Export a run for use outside the app: one zip with the model and its papers.

`export_run(run_dir)` writes `<run>.zip` holding a folder `<run>/` with:

    model.ts            TorchScript (torch.jit.load), input -> class probabilities
    model.onnx          ONNX (onnxruntime and friends), same input and output, any batch size
    classes.json        the class names, in the order of the output
    preprocessing.json  what the input must be: size, resize, crop, mean and std
    MODEL_CARD.md       what the model is, what it was trained on, how well it does, its limits
    confusion.png       the confusion matrix on the validation images
    predict.py          a small standalone example with onnxruntime (no torch needed)

Both models take a float tensor (batch, 3, H, W): RGB scaled to 0..1, then
normalised with the mean and std in preprocessing.json; they output softmax
probabilities (batch, classes). Before zipping, each export is run on real
validation images and compared with the app's own model; the model card says
how closely they agree.
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from .evaluation import LoadedModel, load_run_model
from .freeze import freeze_plan_for
from .images import open_rgb
from .runs import atomic_write_bytes, open_run

ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
VERIFY_IMAGES = 8


class ProbabilitiesModel(nn.Module):
    """The run's model followed by a softmax: what the exported files compute."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(dim=1)


def preprocessing(loaded: LoadedModel) -> dict:
    """The preprocessing the app applies before the model, from the same facts
    (the backbone's sizes() and normalisation) that build the run's evaluation
    transform, so that it can never disagree with it."""
    out = {"color": "RGB", "scale": "pixel values / 255, so 0..1; then (x - mean) / std per channel",
           "layout": "NCHW float32: (batch, 3, height, width)"}
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


def _cpu_copy(model: nn.Module) -> ProbabilitiesModel:
    """What the exported files compute, as a CPU copy in eval mode: the
    caller's model (perhaps on a GPU, perhaps training) stays where and as it
    is. Tensors are copied straight to the CPU, never twice on the GPU."""
    on_cpu = {id(t): (nn.Parameter(t.detach().cpu(), requires_grad=t.requires_grad)
                      if isinstance(t, nn.Parameter) else t.detach().cpu())
              for t in (*model.parameters(), *model.buffers()) if t.device.type != "cpu"}
    return ProbabilitiesModel(copy.deepcopy(model, memo=on_cpu)).eval()


def export_torchscript(loaded: LoadedModel, path: Path, example: torch.Tensor) -> Path:
    wrapper = _cpu_copy(loaded.model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation and tracer notes, not problems here
        traced = torch.jit.trace(wrapper, example.cpu(), check_trace=False)
        traced.save(str(path))
    return path


def export_onnx(loaded: LoadedModel, path: Path, example: torch.Tensor) -> Path:
    """ONNX with a dynamic batch axis. Uses torch's TorchScript-based exporter
    (dynamo=False): it needs no extra packages, while the newer exporter needs
    onnxscript."""
    wrapper = _cpu_copy(loaded.model)
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # nn.MultiheadAttention's fused inference path (ViT) has no ONNX form;
        # the plain path computes the same thing with ordinary operators.
        if mha:
            mha.set_fastpath_enabled(False)
        try:
            _onnx_export(wrapper, example, path)
        finally:
            if mha:
                mha.set_fastpath_enabled(fastpath)
    return path


def _onnx_export(wrapper: nn.Module, example: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        wrapper, (example.cpu(),), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=ONNX_OPSET,
        dynamo=False)


def _val_tensors(loaded: LoadedModel, run_dir: Path, n: int) -> tuple[torch.Tensor, list[str]]:
    """Up to n readable validation images of the run, preprocessed, spread over the classes."""
    val = open_run(run_dir).scan.get("val") or []
    by_class: dict[int, list[str]] = {}
    for path, label in val:
        by_class.setdefault(int(label), []).append(str(path))
    order = []
    for i in range(max((len(v) for v in by_class.values()), default=0)):
        order += [paths[i] for paths in by_class.values() if i < len(paths)]
    tensors, used = [], []
    for path in order:
        if len(tensors) >= n:
            break
        try:
            tensors.append(loaded.transform(open_rgb(path, max_side=loaded.resize_size)))
            used.append(path)
        except Exception:  # noqa: BLE001 - a file gone since training is simply not used
            continue
    if not tensors:  # no readable val image: a grey picture still checks the export
        size = loaded.model.info.sizes(loaded.config.get("image_size"))[0]
        return torch.zeros(1, 3, size, size), []
    return torch.stack(tensors), used


def verify_exports(loaded: LoadedModel, folder: Path, images: torch.Tensor) -> dict:
    """Run the exported files on `images` and compare with the app's model."""
    with torch.no_grad():
        reference = _cpu_copy(loaded.model)(images.cpu()).numpy()
    checks = {"images": int(len(images))}
    ts_path = folder / "model.ts"
    if ts_path.exists():
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            got = torch.jit.load(str(ts_path), map_location="cpu")(images.cpu()).numpy()
        checks["torchscript"] = _agreement(reference, got)
    onnx_path = folder / "model.onnx"
    if onnx_path.exists():
        try:
            import onnxruntime as ort
        except ImportError:
            checks["onnx"] = {"checked": False, "why": "onnxruntime is not installed"}
        else:
            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            got = session.run([OUTPUT_NAME], {INPUT_NAME: images.cpu().numpy()})[0]
            checks["onnx"] = _agreement(reference, got)
    return checks


def _agreement(reference: np.ndarray, got: np.ndarray) -> dict:
    return {"checked": True, "max_abs_difference": float(np.abs(reference - got).max()),
            "same_top_class": bool((reference.argmax(1) == got.argmax(1)).all())}


# --------------------------------------------------------------------------------------
# The confusion matrix picture (PIL only: no plotting library needed)
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
            draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), str(value), anchor="mm", font=font,
                      fill="white" if share > 0.5 else "black")
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
    import io

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
    last_epoch = max(0, int(status.get("epochs_done") or config.get("epochs") or 1) - 1)
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
        rows.append(f"| {name} | {count:,} | {state} | {rate} |")
    return rows, trained


def model_card(loaded: LoadedModel, run_dir: Path, checks: dict | None = None) -> str:
    """MODEL_CARD.md text for a run: its sections, one after the other."""
    run = open_run(run_dir)
    config, status, scan = loaded.config, run.status, run.scan
    evaluation = run.evaluation or {}
    info = loaded.model.info
    classes = loaded.classes
    prep = preprocessing(loaded)
    counts = scan.get("counts") or {}
    n_val = sum(int(c.get("val", 0)) for c in counts.values())
    lines = _card_intro(run.name, info, classes)
    lines += _card_data(scan, config, classes)
    lines += _card_model(loaded, config, status)
    lines += _card_settings(config, status, prep)
    lines += _card_evaluation(evaluation, n_val)
    lines += ["", "## Limits", ""]
    lines += _limits(classes, counts, evaluation, info, n_val)
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
    """The image folder, how it was split, and the images per class."""
    counts = scan.get("counts") or {}
    n_train = sum(int(c.get("train", 0)) for c in counts.values())
    n_val = sum(int(c.get("val", 0)) for c in counts.values())
    lines = [
        "",
        "## Data",
        "",
        f"Trained on the image folder `{scan.get('root') or config.get('data_dir')}`: "
        f"{n_train} training images and {n_val} validation images "
        + ("(the split came from its train/ and val/ folders)." if scan.get("split_source") == "folders"
           else f"(a random {_pct(scan.get('val_fraction'))} of each class held out, seed {scan.get('seed')})."),
        "",
        "| class | training images | validation images |",
        "|---|---:|---:|",
    ]
    for name in classes:
        c = counts.get(name, {})
        lines.append(f"| {name} | {c.get('train', 0)} | {c.get('val', 0)} |")
    skipped = scan.get("skipped") or []
    if skipped:
        lines += ["", f"{len(skipped)} files in the folder were left out (unreadable or not images)."]
    return lines


def _card_model(loaded: LoadedModel, config: dict, status: dict) -> list[str]:
    """The backbone, where its weights started, and which blocks trained."""
    info, classes = loaded.model.info, loaded.classes
    block_rows, trained_blocks = _blocks_table(loaded, config, status)
    frozen = [b for b, c in loaded.model.block_param_counts().items() if c and b not in trained_blocks]
    init = config.get("init", "pretrained")
    start = ("ImageNet weights" if init == "pretrained" else "random weights (no transfer)" if init == "random"
             else f"weights from `{Path(str(init)).name}`")
    lines = [
        "",
        "## Model",
        "",
        f"- Backbone: **{info.title}** (`{info.name}`, {info.family} family, {info.params_m}M parameters in the "
        f"original network" + (f", {info.top1:.1f}% top-1 on ImageNet" if info.top1 else "") + ").",
        f"- Started from: {start}; a new head for the {len(classes)} classes"
        + (f" (a hidden layer of {config.get('head_hidden')})" if config.get("head_hidden") else "") + ".",
        f"- Strategy: **{config.get('strategy')}**. {status.get('freeze_plan') or ''}".rstrip(),
        f"- Trained blocks: {', '.join(trained_blocks) or '-'}.",
        f"- Frozen blocks: {', '.join(frozen) or 'none'}.",
        f"- Trainable parameters: {status.get('trainable_params', 0):,} of {status.get('total_params', 0):,}."
        if status.get("total_params") else "- Trainable parameters: -",
    ]
    if block_rows:
        lines += ["", "| block | parameters | during training | learning-rate multiplier |", "|---|---:|---|---:|"]
        lines += block_rows
    return lines


def _card_settings(config: dict, status: dict, prep: dict) -> list[str]:
    """The training settings as a table."""
    seconds = status.get("seconds")
    lines = [
        "",
        "## Training settings",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    settings = [
        ("epochs", f"{status.get('epochs_done', '-')} done of {config.get('epochs')} (best: epoch {status.get('best_epoch', '-')})"),
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
        ("device", status.get("device_name") or status.get("device")),
        ("training time", f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else "-"),
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
    return lines + ["", "Confusion matrix (rows: true class, columns: predicted class):", "",
                    "![confusion matrix](confusion.png)"]


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
        "- `predict.py` does all of this with onnxruntime, Pillow and NumPy: `python predict.py picture.jpg`.",
    ]
    if checks:
        lines += ["", "Checked when exported, on "
                  f"{checks.get('images', 0)} validation images against the app's own model:"]
        for name, title in (("torchscript", "TorchScript"), ("onnx", "ONNX")):
            check = checks.get(name)
            if check and check.get("checked"):
                same = "the same top class" if check["same_top_class"] else "a DIFFERENT top class on some images"
                lines.append(f"- {title}: {same}; probabilities differ by at most {check['max_abs_difference']:.1e}.")
            elif check:
                lines.append(f"- {title}: not checked ({check.get('why')}).")
    return lines


def _limits(classes, counts, evaluation, info, n_val) -> list[str]:
    lines = [
        f"- It only knows these {len(classes)} classes. Shown anything else, it still picks one of them, "
        "often with high confidence.",
        f"- Its accuracy was measured on only {n_val} validation images from the same folder as the training "
        "images. Expect it to do worse on pictures taken differently (other cameras, light, backgrounds, "
        "angles, drawings instead of photos).",
    ]
    small = [name for name in classes if int((counts.get(name) or {}).get("train", 0)) < 50]
    if small:
        lines.append(f"- Few training images for {', '.join(small)} (under 50 each): treat these classes with extra care.")
    per_class = evaluation.get("per_class") or []
    if per_class:
        weakest = min(per_class, key=lambda c: c["recall"])
        if weakest["recall"] < 0.999:
            lines.append(f"- Weakest class on validation: {weakest['class']} (found {_pct(weakest['recall'])} "
                         "of its images). Look at the confusion matrix to see what it is mistaken for.")
    if n_val < 100:
        lines.append(f"- With {n_val} validation images, one image more or less right moves accuracy by "
                     f"{100 / max(1, n_val):.1f} points: the numbers above are rough.")
    lines += [
        f"- The backbone ({info.title}) was pretrained on ImageNet photos and carries that data's gaps and "
        "biases.",
        "- Confidence is not certainty: a probability of 0.9 does not mean it is right 9 times in 10.",
        "- Do not use it for decisions about people, health, safety or money.",
    ]
    return lines


# --------------------------------------------------------------------------------------
# The standalone example
# --------------------------------------------------------------------------------------

PREDICT_PY = '''"""Predict with the exported model: python predict.py IMAGE [IMAGE ...]

Needs only onnxruntime, Pillow and NumPy (pip install onnxruntime pillow numpy).
Prepares each picture exactly as described in preprocessing.json.
"""
import copy
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
CLASSES = json.loads((HERE / "classes.json").read_text())
PREP = json.loads((HERE / "preprocessing.json").read_text())
FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}


def prepare(path):
    short, size = PREP["resize_size"], PREP["image_size"]
    image = Image.open(path)
    if image.format == "JPEG":
        image.draft("RGB", (short, short))  # decode big JPEGs at a reduced scale, as the app does
    image = ImageOps.exif_transpose(image).convert("RGB")
    w, h = image.size
    if w <= h:
        new = (short, int(short * h / w))
    else:
        new = (int(short * w / h), short)
    image = image.resize(new, FILTERS.get(PREP["interpolation"], Image.BILINEAR))
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.array(PREP["mean"], dtype=np.float32)) / np.array(PREP["std"], dtype=np.float32)
    return x.transpose(2, 0, 1)  # HWC -> CHW


def main(paths):
    session = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.stack([prepare(p) for p in paths]).astype(np.float32)
    probs = session.run([PREP["output_name"]], {PREP["input_name"]: batch})[0]
    for path, p in zip(paths, probs):
        top = np.argsort(-p)[:3]
        print(path + ": " + ", ".join(f"{CLASSES[i]} {p[i]:.3f}" for i in top))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
'''


# --------------------------------------------------------------------------------------
# Everything together
# --------------------------------------------------------------------------------------


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, *, verify: bool = True,
               formats: tuple[str, ...] = ("torchscript", "onnx"), on_step=None) -> Path:
    """Export a run's best model as one zip (see the module docstring) and return
    the zip's path: `out_dir/<run name>.zip`, by default in the run's folder
    under export/. on_step(text) is told what is happening (for a spinner)."""
    run = open_run(run_dir)
    run_dir = run.path
    unknown = set(formats) - {"torchscript", "onnx"}
    if unknown:
        raise ValueError(f"Unknown export formats {sorted(unknown)}; choose from torchscript, onnx.")
    say = on_step or (lambda text: None)
    say("Loading the model")
    loaded = load_run_model(run_dir, device="cpu")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run.name
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        images, _used = _val_tensors(loaded, run_dir, VERIFY_IMAGES)
        example = images[:1]
        if "torchscript" in formats:
            say("Writing TorchScript")
            export_torchscript(loaded, folder / "model.ts", example)
        if "onnx" in formats:
            say("Writing ONNX")
            export_onnx(loaded, folder / "model.onnx", example)
        checks = None
        if verify:
            say("Checking the exported files on validation images")
            checks = verify_exports(loaded, folder, images)
            (folder / "export_check.json").write_text(json.dumps(checks, indent=2))
        say("Writing the model card")
        (folder / "classes.json").write_text(json.dumps(loaded.classes, indent=2))
        (folder / "preprocessing.json").write_text(json.dumps(preprocessing(loaded), indent=2))
        if run.evaluation:
            confusion_png(run.evaluation, folder / "confusion.png")
        (folder / "MODEL_CARD.md").write_text(model_card(loaded, run_dir, checks))
        (folder / "predict.py").write_text(PREDICT_PY)
        say("Zipping")
        zip_tmp = Path(tmp) / f"{name}.zip"
        with zipfile.ZipFile(zip_tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                zf.write(path, path.relative_to(Path(tmp)).as_posix())
        target = out_dir / f"{name}.zip"
        shutil.move(str(zip_tmp), str(target))  # same folder tree: a rename, never half a zip
    return target
