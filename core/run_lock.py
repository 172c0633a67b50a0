"""Who trains a run: an advisory lock on the run folder's `run.lock`.

The process that trains a run (or has it queued) holds an exclusive lock on
the file for the whole time; anyone else can ask whether it is held. The
operating system drops the lock when that process ends in any way (finished,
killed, crashed), so a dead process can never keep a run "running", and a
pid reused by an unrelated process means nothing. On POSIX it is `flock`,
which is per open file: a second open in the same process (another tab of the
app) sees the lock too. On Windows it is `msvcrt.locking` on the file's first
byte, which behaves the same way.

Readers ask with a shared lock, so any number of them can look at once; the
trainer retries for a moment if a reader happens to be looking just then.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import UserError

LOCK_FILE = "run.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class RunBusyError(UserError):
    """The run is being trained (or is queued) by a live process."""


def _try_lock(fd: int, exclusive: bool) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
        return True
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


class RunLock:
    """The exclusive lock on one run folder. `acquire()` takes it or raises
    RunBusyError; `release()` (or the end of the process) gives it back."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 2.0) -> RunLock:
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while not _try_lock(fd, exclusive=True):
            if time.monotonic() >= deadline:
                os.close(fd)
                raise RunBusyError(
                    f"The run {self.folder.name} is being trained (or waits in a queue) in another window or "
                    "process. Stop it there first, or wait until it ends."
                )
            time.sleep(0.05)  # a reader may be looking at this very moment
        self._fd = fd
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                _unlock(fd)
            finally:
                os.close(fd)


def is_locked(folder: str | Path) -> bool:
    """Whether a live process holds the run's lock (trains it or has it queued)."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: nobody ever locked it (or we may not read it)
        return False
    try:
        free = _try_lock(fd, exclusive=False)
        if free:
            _unlock(fd)
        return not free
    finally:
        os.close(fd)
