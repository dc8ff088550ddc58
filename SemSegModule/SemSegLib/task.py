"""A job on the worker thread seen from the main thread: its events translated for the caller, its result
applied on the main thread.

Why: MRML is not thread-safe, so the worker returns plain arrays and `finish` (which writes them into MRML
nodes) runs only inside `poll()`, which the main thread calls (a QTimer in Slicer, `wait()` in scripts).
"""

from __future__ import annotations

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
            raise self.job.error
        return self.result
