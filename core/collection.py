"""Python's garbage collector in a long-lived process that trains (the app).

The app's process has imported torch, torchvision, pandas, plotly and
Streamlit: hundreds of thousands of objects (millions with more libraries
loaded) that every full collection walks, holding the interpreter's lock:
every thread waits, the page that shows the result included. In a process
as full as the benchmark's, one full collection took 1.25 s, more than a
warm linear probe itself (0.5 s).

So what has lived through a job is frozen (gc.freeze): collections,
automatic or not, skip it and only look at what is new. After each job,
once nothing refers to the run any more, what is new is collected (the
run's own cycles: model, optimiser, loaders) and the survivors frozen. A
cycle among frozen objects that becomes garbage stays until the frozen
objects have grown by a quarter since the last full collection: then one
job end unfreezes and collects everything, as Python's own rule for full
collections does (a quarter more long-lived objects). The command line
freezes what its imports made once (freeze_loaded, core.cli).
"""

from __future__ import annotations

import gc
import threading

# A full collection (frozen objects included) once this many times the
# objects frozen after the last one are frozen.
FULL_AFTER_GROWTH = 1.25

_lock = threading.Lock()
_frozen_after_full = 0  # frozen objects after the last full collection (0: none yet)


def freeze_loaded() -> None:
    """Freeze what exists now, without collecting, as the baseline of the
    rule above: for a process that has just imported what it needs (the
    command line), whose objects are not garbage, so that its first job's
    end collects only what the job made instead of walking everything once."""
    global _frozen_after_full
    with _lock:
        gc.freeze()
        _frozen_after_full = max(_frozen_after_full, gc.get_freeze_count())


def collect_and_freeze() -> bool:
    """Collect what is new (or everything, see the module) and freeze what
    is left. Returns whether it was a full collection."""
    global _frozen_after_full
    with _lock:
        full = not _frozen_after_full or gc.get_freeze_count() > FULL_AFTER_GROWTH * _frozen_after_full
        if full:
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        if full:
            _frozen_after_full = gc.get_freeze_count()
        return full
