import threading

import numpy as np
import pytest
from SemSegLib.task import SemSegEvent, SemSegTask
from SemSegLib.worker import JobState, Worker


def test_jobs_run_in_order_on_one_thread_and_report_progress():
    worker = Worker()
    threads = []

    def job_fn(job):
        threads.append(threading.current_thread().name)
        for i in range(3):
            job.report(i)
        return "result"

    a, b = worker.submit("a", job_fn), worker.submit("b", job_fn)
    b.finished.wait(5)
    assert a.state == JobState.DONE and b.result == "result"
    assert len(set(threads)) == 1 and threads[0] != threading.current_thread().name
    events = a.poll()
    assert [e.payload for e in events if e.kind == "progress"] == [0, 1, 2] and events[-1].kind == "done"
    worker.shutdown()
    assert not worker.alive


def test_cancellation_and_failure_reach_the_main_thread():
    worker = Worker()
    started = threading.Event()

    def long_job(job):
        started.set()
        while not job.should_stop():
            job.cancel_event.wait(0.01)
        return "stopped cleanly"

    job = worker.submit("long", long_job)
    started.wait(5)
    job.cancel()
    job.finished.wait(5)
    assert job.state == JobState.CANCELLED and job.result == "stopped cleanly"

    failing = worker.submit("fail", lambda job: 1 / 0)
    failing.finished.wait(5)
    assert failing.state == JobState.FAILED and isinstance(failing.error, ZeroDivisionError)
    assert [e.kind for e in failing.poll()] == ["failed"]
    assert worker.submit("after", lambda job: 42).finished.wait(5)  # the worker survives a failed job
    worker.shutdown()


def test_a_job_cancelled_before_it_starts_never_runs():
    worker = Worker()
    gate = threading.Event()
    first = worker.submit("block", lambda job: gate.wait(5))
    ran = []
    second = worker.submit("skip", lambda job: ran.append(1))
    second.cancel()
    gate.set()
    second.finished.wait(5)
    assert first.state == JobState.DONE and second.state == JobState.CANCELLED and not ran
    worker.shutdown()


def test_a_task_applies_its_result_on_the_polling_thread_and_raises_failures_from_wait():
    worker = Worker()
    finished_on = []

    def finish(result):
        finished_on.append(threading.current_thread().name)  # MRML writes happen here: must be the poller
        return result * 2

    def work(job):
        for i in range(3):
            job.report(i)
        return 21

    events = []
    task = SemSegTask(worker.submit("ok", work), lambda p: SemSegEvent("progress", f"step {p}", p / 3), finish)
    assert task.wait(events.append) == 42
    assert finished_on == [threading.current_thread().name]
    assert [e.message for e in events] == ["step 0", "step 1", "step 2", "done"]
    assert events[-1].kind == "done" and events[-1].data == 42 and task.poll()

    failing = SemSegTask(worker.submit("bad", lambda job: 1 / 0), lambda p: None, finish)
    kinds = []
    with pytest.raises(ZeroDivisionError):
        failing.wait(lambda e: kinds.append(e.kind))
    assert kinds == ["failed"] and finished_on == [threading.current_thread().name]  # no result applied

    started = threading.Event()

    def until_cancelled(job):
        started.set()
        while not job.should_stop():
            job.cancel_event.wait(0.01)
        return 1

    cancelled = SemSegTask(worker.submit("long", until_cancelled), lambda p: None, finish)
    started.wait(5)
    cancelled.cancel()
    kinds.clear()
    assert cancelled.wait(lambda e: kinds.append(e.kind)) == 2 and kinds == ["cancelled"]
    worker.shutdown()


def test_neither_the_worker_nor_a_failed_job_keeps_what_the_main_thread_frees():
    """A finished job's result is not held by the worker until the next job comes; an error raised by `wait` is held
    by neither its job nor a cycle. Either would free the caller's objects later, on whichever thread let go last
    (the worker's, or the garbage collector's): a scene in the frames of a failed script, freed on the worker thread,
    crashed the tests' process."""
    import gc
    import weakref

    class Big:
        pass

    worker, refs = Worker(), []

    def made_here():  # an object that only the job and what it frees hold
        made = Big()
        refs.append(weakref.ref(made))
        return made

    task = SemSegTask(worker.submit("big", lambda job: made_here()), lambda p: None, lambda r: None)
    task.wait()
    gc.disable()  # what refcounting frees, not the collector
    try:
        del task
        for _ in range(100):  # the worker lets go of the job right after saying it finished
            if refs[0]() is None:
                break
            threading.Event().wait(0.01)
        assert refs[0]() is None

        def raise_from_wait(task):
            local = made_here()  # noqa: F841 - what the caller's frame holds (a scene), in the error's traceback
            task.wait()

        failing = SemSegTask(worker.submit("bad", lambda job: 1 / 0), lambda p: None, lambda r: None)
        with pytest.raises(ZeroDivisionError):
            raise_from_wait(failing)
        assert failing.job.error is None and refs[1]() is None
        with pytest.raises(RuntimeError, match="bad failed:(.|\n)*ZeroDivisionError"):
            failing.wait()
    finally:
        gc.enable()
        worker.shutdown()


def test_paced_writes_come_in_batches_that_keep_writing_to_a_share_of_the_time(monkeypatch):
    from SemSegLib import task

    clock = {"now": 0.0}
    monkeypatch.setattr(task, "time", type("Clock", (), {"monotonic": staticmethod(lambda: clock["now"])}))
    batches = []

    def write(batch):  # a write that takes 1 s
        batches.append(sorted(batch))
        clock["now"] += 1.0

    writes = task.PacedWrites(write, every=0)
    writes.add("a", 1)  # the first result is written at once
    assert batches == [["a"]] and writes.written == 1
    clock["now"] = 10.9
    writes.add("b", 2)  # 9.9 s after a write that took 1 s: held (WRITE_TIME_FACTOR)
    assert batches == [["a"]]
    clock["now"] = 11.0
    writes.add("c", 3)
    assert batches == [["a"], ["b", "c"]] and writes.written == 3
    writes.flush()  # nothing pending: no write
    assert len(batches) == 2

    batches.clear()
    at_the_end = task.PacedWrites(write, every=None)
    for key in "xyz":
        clock["now"] += 100
        at_the_end.add(key, 0)
    assert batches == [] and at_the_end.written == 0
    at_the_end.flush()
    assert batches == [["x", "y", "z"]] and at_the_end.written == 3
    # Whatever the pacing, no more than so many bytes of arrays are held.
    batches.clear()
    bounded = task.PacedWrites(write, every=None, most_held_bytes=250)
    for key in "pqrst":
        bounded.add(key, (np.zeros(10, np.uint8), np.zeros(10, np.float64)))  # 90 bytes
    assert batches == [["p", "q", "r"]] and bounded.written == 3
    bounded.flush()
    assert batches == [["p", "q", "r"], ["s", "t"]]


def test_shared_slices_are_copied_one_at_a_time_under_the_writer_s_lock():
    # An export on the worker reads the uncertainty volume's slices while the main thread may write a prediction's
    # into it: a slice is copied only while the writer does not hold the lock, and is a copy, not a view.
    from SemSegLib.shared_slices import SharedSlices

    array = np.zeros((4, 3, 5), np.float32)
    lock = threading.Lock()
    slices = SharedSlices(array, [3, 1], lock)
    assert list(slices) == [3, 1] and len(slices) == 2 and 2 not in slices and 1 in slices
    with pytest.raises(KeyError):
        slices[2]
    got = []
    with lock:  # the writer holds it: the reader waits for the slice as a whole
        reader = threading.Thread(target=lambda: got.append(slices[3]))
        reader.start()
        reader.join(0.2)
        assert reader.is_alive() and not got
        array[3] = 7.0
    reader.join(60)
    assert got[0].tolist() == np.full((3, 5), 7.0).tolist()
    array[3] = 0.0
    assert got[0].min() == 7.0 and not np.shares_memory(got[0], array)
