"""Errors a person can act on, and the one place that turns any exception
into words for them.

Every error the engine raises on purpose (a folder with one class, weights
that cannot be downloaded, a setting out of range) is a `UserError`: its
message already says what to do. `friendly()` is used by the training job
(the reason a run failed), the command line and the pages, so the same
problem reads the same everywhere. No torch import: the GPU's out-of-memory
error is recognised by its message.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem a user can fix; its message says what to do."""


def friendly(exc: BaseException) -> str:
    """One or two sentences a non-programmer can act on."""
    if isinstance(exc, UserError):
        return str(exc)
    text = str(exc)
    if "out of memory" in text.lower():
        return "The GPU ran out of memory. Try a smaller batch size or image size, or a smaller backbone."
    if "DataLoader timed out" in text:
        return (
            "Reading the images stalled: a worker process gave no batch for minutes. "
            "Try again, or train with --num-workers 0 so threads read them."
        )
    if "DataLoader worker" in text and ("Bus error" in text or "shared memory" in text.lower()):
        return (
            "A worker process reading the images ran out of shared memory (/dev/shm). Give the machine more "
            "(for Docker: --shm-size=2g), or train with --num-workers 0 so threads read them."
        )
    if type(exc).__name__.startswith("Dist") or any(w in text for w in ("gloo", "NCCL", "ProcessGroup")):
        return (  # torch.distributed: a rank of a multi-process (torchrun) training is gone or stalled
            "Another process of this multi-process training stopped answering (it crashed, was killed, or its "
            "machine lost the network), so this one stopped too. The last finished epoch is saved: you can resume it."
        )
    if isinstance(exc, FileNotFoundError):
        return f"A file or folder was missing: {str(exc).rstrip('.')}. Check that it is still there."
    if isinstance(exc, PermissionError):
        return f"Transfer Studio is not allowed to read or write {exc.filename or 'a file'}. Check its permissions."
    if isinstance(exc, ValueError):
        return f"A setting is not valid: {exc}"
    if isinstance(exc, OSError):
        return text
    return f"Something went wrong ({type(exc).__name__}: {exc}). Try again; if it keeps happening, restart the app."


class TrainingError(UserError):
    """A training that cannot go on as set up: a device that is not here, an
    unknown optimiser or schedule, a folder that cannot be trained on, a loss
    that became NaN. Raised by core.devices and core.training."""
