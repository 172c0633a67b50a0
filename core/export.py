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
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .evaluation import LoadedModel, load_run_model
from .images import open_rgb
from .model_card import INPUT_NAME, ONNX_OPSET, OUTPUT_NAME, confusion_png, model_card, preprocessing
from .runs import open_run

VERIFY_IMAGES = 8


class ProbabilitiesModel(nn.Module):
    """The run's model followed by a softmax: what the exported files compute."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(dim=1)


def _cpu_copy(model: nn.Module) -> ProbabilitiesModel:
    """What the exported files compute, as a CPU copy in eval mode: the
    caller's model (perhaps on a GPU, perhaps training) stays where and as it
    is. Tensors are copied straight to the CPU, never twice on the GPU."""
    on_cpu = {
        id(t): (
            nn.Parameter(t.detach().cpu(), requires_grad=t.requires_grad)
            if isinstance(t, nn.Parameter)
            else t.detach().cpu()
        )
        for t in (*model.parameters(), *model.buffers())
        if t.device.type != "cpu"
    }
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
        wrapper,
        (example.cpu(),),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


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
    return {
        "checked": True,
        "max_abs_difference": float(np.abs(reference - got).max()),
        "same_top_class": bool((reference.argmax(1) == got.argmax(1)).all()),
    }


# --------------------------------------------------------------------------------------
# The confusion matrix picture (PIL only: no plotting library needed)
# --------------------------------------------------------------------------------------


PREDICT_PY = """\"\"\"Predict with the exported model: python predict.py PICTURE_OR_FOLDER [...]

Needs only onnxruntime, Pillow and NumPy (pip install onnxruntime pillow numpy).
Prepares each picture exactly as described in preprocessing.json. A folder
is read with everything inside it; a file that is not a readable picture is
named on the error output and the others go on.
\"\"\"
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
PICTURES = {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BATCH = 32  # pictures per run of the model: memory stays small for any number of them


def prepare(path):
    short, size = PREP["resize_size"], PREP["image_size"]
    with Image.open(path) as image:
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


def pictures(args):
    \"\"\"The files named, and the pictures inside the folders named.\"\"\"
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in PICTURES and p.is_file())
            if not inside:
                print(f"{arg}: no pictures in this folder", file=sys.stderr)
            yield from (str(p) for p in inside)
        else:
            yield arg


def main(args):
    session = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    paths, batch, answered = [], [], 0
    for path in [*pictures(args), None]:  # None: the end, to run the last batch
        if path is not None:
            try:
                batch.append(prepare(path))
                paths.append(path)
            except Exception as exc:  # not a picture, damaged, missing: said, and the others go on
                print(f"{path}: skipped, not a readable picture ({exc})", file=sys.stderr)
        if batch and (len(batch) == BATCH or path is None):
            probs = session.run([PREP["output_name"]], {PREP["input_name"]: np.stack(batch)})[0]
            for name, p in zip(paths, probs):
                top = np.argsort(-p)[:3]
                print(name + ": " + ", ".join(f"{CLASSES[i]} {p[i]:.3f}" for i in top))
            answered += len(batch)
            paths, batch = [], []
    return 0 if answered else 1


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
"""


# --------------------------------------------------------------------------------------
# Everything together
# --------------------------------------------------------------------------------------


def export_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    verify: bool = True,
    formats: tuple[str, ...] = ("torchscript", "onnx"),
    on_step=None,
) -> Path:
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
