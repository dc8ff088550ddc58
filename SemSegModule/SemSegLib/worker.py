"""One persistent worker thread for all torch work, polled by the caller's thread.

Why one persistent thread: torch keeps per-thread state (thread pools, CUDA context) and Slicer's Python
is not happy with many short-lived threads that touch it. Why polling: the worker never touches Qt or MRML
(not thread-safe); it only appends events to a queue that the main thread drains (a QTimer in Slicer, a
loop in scripts and tests). Inputs are plain numpy arrays copied on the main thread before submission.
"""

from __future__ import annotations

import enum
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class JobEvent:
    kind: str  # "progress", "done", "failed"
    payload: Any = None


@dataclass
class Job:
    name: str
    function: Callable[..., Any]
    cancel_event: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue = field(default_factory=queue.Queue)
    state: JobState = JobState.QUEUED
    result: Any = None
    error: BaseException | None = None
    error_traceback: str = ""
    finished: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancel_event.set()

    def should_stop(self) -> bool:
        return self.cancel_event.is_set()

    def report(self, payload: Any) -> None:
        """Called from the worker: queue a progress payload for the main thread."""
        self.events.put(JobEvent("progress", payload))

    def poll(self) -> list[JobEvent]:
        """Called from the main thread: all events since the last poll."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    @property
    def is_finished(self) -> bool:
        return self.finished.is_set()


class Worker:
    """A daemon thread that runs submitted jobs one at a time."""

    def __init__(self, name: str = "SemSegWorker"):
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, name: str, function: Callable[[Job], Any]) -> Job:
        """`function(job)` runs on the worker; it may call `job.report(...)` and poll `job.should_stop()`."""
        job = Job(name, function)
        self._jobs.put(job)
        return job

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancel_event.is_set():
                job.state = JobState.CANCELLED
                job.events.put(JobEvent("done", None))
                job.finished.set()
                continue
            job.state = JobState.RUNNING
            try:
                job.result = job.function(job)
                job.state = JobState.CANCELLED if job.cancel_event.is_set() else JobState.DONE
                job.events.put(JobEvent("done", job.result))
            except BaseException as e:  # noqa: BLE001 - everything is handed to the main thread
                job.error, job.error_traceback = e, traceback.format_exc()
                job.state = JobState.FAILED
                job.events.put(JobEvent("failed", e))
            finally:
                job.finished.set()
            # Not kept until the next job comes: the last reference to its result (a stack of gigabytes) would
            # stay here until then, and whatever that reference frees would be freed on this thread.
            job = None

    def shutdown(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
