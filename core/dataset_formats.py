"""Reading the standard datasets' own file formats, with nothing executed and
every size bounded: CIFAR's pickled batches (through a restricted
unpickler), MNIST's idx files, STL-10's raw binary.

A file is read from the dataset's folder, as torchvision unpacks it, or
straight out of the downloaded .tar.gz, in one pass and without writing
anything (so no path inside an archive ever reaches the disk).
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from .errors import UserError

# No file of these datasets is larger (STL-10's unlabeled_X.bin, 2.6 GB, is
# never read); a bigger one is not the file it claims to be.
MAX_MEMBER_BYTES = 1 << 30


def read_members(source: Path, base: str, names: list[str]) -> dict[str, bytes]:
    """{name: bytes} of the files `names` of a dataset: from the folder
    `source` (its files directly inside) or from the archive `source`, whose
    files lie under `base`/. Missing files raise UserError naming them."""
    found: dict[str, bytes] = {}
    if source.is_dir():
        for name in names:
            path = source / name
            if path.is_file():
                found[name] = _read_capped(path)
    else:
        wanted = {f"{base}/{n}": n for n in names}
        try:
            with tarfile.open(source, "r|*") as tar:  # one pass, streaming: nothing is extracted
                for member in tar:
                    name = wanted.get(member.name.lstrip("./"))
                    if name is None or not member.isfile():
                        continue
                    if member.size > MAX_MEMBER_BYTES:
                        raise UserError(f"{source.name} holds a {name} that is too large to be the real one.")
                    found[name] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
            raise UserError(f"{source} is damaged or not the dataset's archive ({exc}). Download it again.") from exc
    missing = [n for n in names if n not in found]
    if missing:
        raise UserError(f"{source} does not hold {', '.join(missing)}: it is not the dataset's archive or folder.")
    return found


def _read_capped(path: Path) -> bytes:
    if path.stat().st_size > MAX_MEMBER_BYTES:
        raise UserError(f"{path} is too large to be the dataset's file.")
    return path.read_bytes()


# --- CIFAR: pickled dicts of numpy arrays -------------------------------------------
#
# CIFAR's "python version" files are pickles, and nothing from a user is ever
# unpickled as such. We do not rely on torchvision's md5 check of the files
# instead: a file a person put in the folder (or a test made) would be
# refused, and an md5 only says the file is the published one, while this
# reader is safe for any file. A pickle can only run code through the
# globals it names, so this unpickler allows exactly the few that rebuild a
# plain numpy array (the ndarray type, its reconstructor and frombuffer), a
# dtype that is not "object" (an object array could hold anything) and
# latin1 text turned into bytes; any other global is refused. Lists, dicts, strings and numbers need no global.


def _safe_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dtype


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3's protocol-2 pickles call to rebuild bytes (`_codecs.encode`), for latin1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("only latin1 text may become bytes")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    reconstruct = np.ndarray.__reduce__(np.zeros(1, np.uint8))[0]  # numpy's own _reconstruct, wherever it lives
    frombuffer = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # numpy's _frombuffer (protocol 5)
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = frombuffer
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _allowed = None

    def find_class(self, module: str, name: str):
        if _NumpyOnlyUnpickler._allowed is None:
            _NumpyOnlyUnpickler._allowed = _allowed_globals()
        try:
            return _NumpyOnlyUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR file") from None


def load_cifar_pickle(data: bytes, what: str) -> dict:
    """A CIFAR batch or meta file as a dict with str keys (latin1, as torchvision reads them)."""
    try:
        found = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any failure means: not a CIFAR file we can read
        raise UserError(f"{what} is not a CIFAR file that can be read safely ({exc}).") from exc
    if not isinstance(found, dict):
        raise UserError(f"{what} is not a CIFAR file (it holds no table).")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in found.items()}


def cifar_batch(data: bytes, what: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N×32×32×3 uint8, labels N) of one CIFAR batch file."""
    batch = load_cifar_pickle(data, what)
    try:
        pixels = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
        images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{what} is not a CIFAR batch ({exc}).") from exc
    if len(images) != len(labels):
        raise UserError(f"{what} has {len(images)} pictures but {len(labels)} labels.")
    return images, labels


def cifar_names(data: bytes, what: str, key: str) -> list[str]:
    names = load_cifar_pickle(data, what).get(key)
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise UserError(f"{what} holds no class names.")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


# --- MNIST and Fashion-MNIST: idx files --------------------------------------------


def read_idx(data: bytes, what: str, dims: int) -> np.ndarray:
    """An idx file of unsigned bytes (gzip-compressed or not) with `dims` dimensions."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                data = f.read(MAX_MEMBER_BYTES + 1)
        except (OSError, EOFError) as exc:
            raise UserError(f"{what} is damaged ({exc}).") from exc
        if len(data) > MAX_MEMBER_BYTES:
            raise UserError(f"{what} is too large to be the dataset's file.")
    if len(data) < 4 + 4 * dims or data[:3] != b"\x00\x00\x08" or data[3] != dims:
        raise UserError(f"{what} is not an idx file of {dims} dimensions (as MNIST's are).")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = data[4 + 4 * dims :]
    if int(np.prod(shape)) != len(body):
        raise UserError(f"{what} is cut off or damaged: it should hold {shape} values.")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


# --- STL-10: raw binary ---------------------------------------------------------------


def stl_images(data: bytes, what: str) -> np.ndarray:
    """STL-10's N×96×96×3 pictures, stored column by column in the file."""
    side = 96 * 96 * 3
    if not data or len(data) % side:
        raise UserError(f"{what} is not STL-10's picture file (its size is not a whole number of pictures).")
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)


def stl_labels(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64) - 1  # labels 1..10 in the file
