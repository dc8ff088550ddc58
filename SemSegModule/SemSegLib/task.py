"""A job on the worker thread seen from the main thread: its events translated for the caller, its result
applied on the main thread.

Why: MRML is not thread-safe, so the worker returns plain arrays and `finish` (which writes them into MRML
nodes) runs only inside `poll()`, which the main thread calls (a QTimer in Slicer, `wait()` in scripts).
Results a job reports while it runs (a stack's slices as they are predicted) are written there too, in paced
batches (`PacedWrites`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .worker import Job, JobEvent, JobState


@dataclass
class SemSegEvent:
    """What the worker reports, translated for the caller (the widget's progress bar, a script's print)."""

    kind: str  # "progress", "preview" (a training shows its labels so far), "done", "failed", "cancelled"
    message: str = ""
    fraction: float | None = None  # 0..1 when known
    data: Any = None


class SemSegTask:
    """A running job plus what to do with its result on the main thread. Poll it until `finished`."""

    def __init__(self, job: Job, describe: Callable[[Any], SemSegEvent], finish: Callable[[Any], Any],
                 ended: Callable[[], None] | None = None):
        """`ended()` runs on the main thread when the job ends, however it ends (after `finish`, if that runs):
        what the job showed while it ran is taken down there."""
        self.job = job
        self._describe = describe
        self._finish = finish
        self._ended = ended
        self.result: Any = None
        self.finished = False

    def cancel(self) -> None:
        self.job.cancel()

    def poll(self, eventCallback: Callable[[SemSegEvent], None] | None = None) -> bool:
        """Drain events (main thread); on completion apply the result to MRML. Returns True when finished."""
        if self.finished:
            return True
        for event in self.job.poll():
            self._handle(event, eventCallback)
        return self.finished

    def _handle(self, event: JobEvent, eventCallback) -> None:
        if event.kind == "progress":
            out = self._describe(event.payload)
        else:
            self.finished = True
            try:
                if event.kind == "failed":
                    out = SemSegEvent("failed", str(event.payload), data=event.payload)
                else:
                    self.result = self._finish(event.payload)
                    cancelled = self.job.state == JobState.CANCELLED
                    out = SemSegEvent("cancelled" if cancelled else "done", "cancelled" if cancelled else "done",
                                      1.0, self.result)
            finally:
                if self._ended is not None:
                    self._ended()
        if eventCallback is not None:
            eventCallback(out)

    def wait(self, eventCallback: Callable[[SemSegEvent], None] | None = None, interval: float = 0.1) -> Any:
        while not self.poll(eventCallback):
            self.job.finished.wait(interval)
        if self.job.state == JobState.FAILED:
            # Raised here, the error's traceback gains the caller's frames, and all they hold (a scene). Neither the
            # job nor this frame may keep it then: held by the job, a thread that still holds the job (the worker's)
            # could free the scene; held by this frame, it makes a cycle that the garbage collector frees on
            # whichever thread it next runs (as concurrent.futures breaks its own).
            error, self.job.error = self.job.error, None
            if error is None:  # raised by an earlier wait
                raise RuntimeError(f"{self.job.name} failed:\n{self.job.error_traceback}")
            try:
                raise error
            finally:
                del error
        return self.result


# Writes of results take at most about 1 / (this + 1) of the main thread: after a write that took t seconds, the
# next comes no sooner than this times t later. A prediction's first write into 100 slices of 1024 x 1024 takes
# about 2 s (it reads the segmentation back; later ones 0.05-0.3 s), which must not freeze Slicer every few seconds.
WRITE_TIME_FACTOR = 10.0


# Results held for a later write are written as soon as their arrays reach this many bytes, however they are paced:
# a script's prediction of 1000 slices of 2048 x 2048 would otherwise hold 20 GB of labels and uncertainty until its
# one write at the end. 100 slices of 1024 x 1024 (5 MB each) stay below it.
MOST_HELD_BYTES = 1 << 29


class PacedWrites:
    """Results a job reports one at a time (by key), written on the main thread in batches while it runs, so that
    the person sees them as they come: at most every `every` seconds and no sooner than WRITE_TIME_FACTOR times the
    last write took. `every` None: only at `flush()`. Only results not yet written are held, and at most
    `most_held_bytes` of their arrays (numpy arrays, or tuples of them)."""

    def __init__(self, write: Callable[[dict], None], every: float | None, most_held_bytes: int = MOST_HELD_BYTES):
        self._write = write
        self._every = every
        self._most_held_bytes = most_held_bytes
        self._pending: dict = {}
        self._held_bytes = 0
        self._last = -float("inf")  # the first result is written at once: the slice the person looks at
        self._cost = 0.0
        self.written = 0  # results written so far

    def add(self, key, value) -> None:
        self._pending[key] = value
        self._held_bytes += sum(getattr(v, "nbytes", 0) for v in (value if isinstance(value, tuple) else (value,)))
        due = self._every is not None and time.monotonic() - self._last >= max(self._every,
                                                                                WRITE_TIME_FACTOR * self._cost)
        if due or self._held_bytes >= self._most_held_bytes:
            self.flush()

    def flush(self) -> None:
        """Write what is pending now."""
        if not self._pending:
            return
        start = time.monotonic()
        batch, self._pending, self._held_bytes = self._pending, {}, 0
        self._write(batch)
        self.written += len(batch)
        self._last = time.monotonic()
        self._cost = self._last - start
