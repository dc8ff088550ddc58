"""The imports a first training needs, made ahead on a thread of their own while the person paints.

Why: in a fresh process a first training spent 4-5 s on imports before its first step on 2 CPU cores: MONAI, torch's
compiler stack (which torch.optim's first optimizer imports), and scikit-learn and scikit-image for the forest
(bench/RESULTS.md, session 76). A stack is loaded a while before its first training, because the strokes are painted
in between: the Logic starts these imports when a stack is loaded.

Why a thread of its own and not the worker: a task queued behind the imports (reading labels, say) would wait for
them. A task that imports these packages itself waits for them instead (`wait`): two threads importing one package at
once can each hold a part of it that the other needs. Nothing here touches Qt or MRML.
"""

from __future__ import annotations

import importlib
import logging
import threading

log = logging.getLogger(__name__)

# In the order a first training imports them.
MODULES = ("torch", "monai.networks.nets", "monai.inferers", "sklearn.ensemble", "skimage.feature", "torch._dynamo")

_thread: threading.Thread | None = None
_lock = threading.Lock()


def start() -> bool:
    """Start importing MODULES on a daemon thread, once per process; False if that was done before."""
    global _thread
    with _lock:
        if _thread is not None:
            return False
        _thread = threading.Thread(target=_import_all, name="SemSeg warm-up", daemon=True)
        _thread.start()
        return True


def wait() -> None:
    """Return when the imports are done, at once if they never started (the task then imports what it needs)."""
    with _lock:
        thread = _thread
    if thread is not None and thread is not threading.current_thread():
        thread.join()


def _import_all() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - missing or broken: the task that needs it says what to do
            log.debug(f"SemSeg warm-up stopped at {name}: {e}")
            return
