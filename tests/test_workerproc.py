"""One real worker process driven through WorkerHandle, as the daemon does.

What only the worker's side can show: each result leaves before the next
task starts, the shared "running" values name the task actually running
and when it started, and nothing the daemon cannot decode ever leaves.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from supervisor.daemon.workerproc import WorkerHandle
from supervisor.protocol import MAX_NESTING, Batch, Done, Hello, Work, encoder, worker_decoder
from tests.conftest import wait_until

ALLOW = ["workers.builtin", "workers.testing"]
MAX_BYTES = 1 << 20


class Worker:
    """A WorkerHandle plus the decoded messages it has sent so far."""

    def __init__(self, handle: WorkerHandle) -> None:
        self.handle = handle
        self.hello: Hello | None = None
        self.done: dict[int, Done] = {}

    def pump(self) -> bool:
        """Read what is waiting; every frame must decode as the daemon decodes it."""
        for frame in self.handle.read_frames():
            msg = worker_decoder.decode(frame)  # the daemon's own decoder
            if isinstance(msg, Hello):
                self.hello = msg
            else:
                assert isinstance(msg, Batch)
                for d in msg.done:
                    assert d.key not in self.done, f"second result for {d.key}"
                    self.done[d.key] = d
        return True

    def send(self, *works: tuple[int, str, list[Any]]) -> None:
        batch = [Work(key, task, msgspec.Raw(encoder.encode(args)), msgspec.Raw(b"\x80"))
                 for key, task, args in works]
        self.handle.write(encoder.encode(batch))

        def written() -> bool:  # a big batch fills the pipe: the worker reads it
            self.handle.flush()
            return not self.handle.wants_write

        wait_until(written, 10, message="worker did not read its batch")

    def wait_results(self, keys: set[int], timeout: float = 10.0) -> dict[int, Done]:
        wait_until(lambda: self.pump() and keys <= self.done.keys(), timeout,
                   message=lambda: f"results for {sorted(keys - self.done.keys())} missing")
        return {k: self.done[k] for k in keys}


@pytest.fixture
def worker() -> Iterator[Worker]:
    ctx = multiprocessing.get_context("forkserver")
    handle = WorkerHandle.spawn(ctx, 0, ALLOW, MAX_BYTES)
    w = Worker(handle)
    try:
        wait_until(lambda: w.pump() and w.hello is not None, 30, message="no hello")
        yield w
    finally:
        handle.signal_group(signal.SIGKILL)
        handle.proc.join(10)
        assert handle.proc.exitcode is not None, "worker outlived SIGKILL"
        handle.release()


def value(done: Done) -> Any:
    return msgspec.msgpack.decode(done.value)


def test_finished_results_leave_before_the_next_task_starts(worker: Worker) -> None:
    """Ten echoes then sleep(30) in one batch: every echo's result arrives
    while the sleep still runs, and the shared values name the sleep, with a
    start time on the daemon's monotonic clock."""
    before = time.monotonic()
    worker.send(*[(k, "workers.builtin:echo", [k]) for k in range(1, 11)],
                (11, "workers.builtin:sleep", [30]))
    got = worker.wait_results(set(range(1, 11)))
    assert [value(got[k]) for k in range(1, 11)] == list(range(1, 11))
    _, started = wait_until(lambda: (r := worker.handle.running()) and r[0] == 11 and r, 10,
                              message="the sleep is not reported running")
    assert before <= started <= time.monotonic()
    assert 11 not in worker.done and worker.handle.alive()


def test_running_is_zero_between_tasks(worker: Worker) -> None:
    """Once a task's result is written and nothing else is held, no task is
    reported running (a death now charges nobody)."""
    worker.send((1, "workers.builtin:echo", ["x"]))
    worker.wait_results({1})
    wait_until(lambda: worker.handle.running_key() == 0, 5,
               message="worker still reports a running task")


def test_a_result_too_deep_for_the_daemon_fails_alone_as_unserializable(worker: Worker) -> None:
    """A result nested ~1000 deep among other tasks of the same batch: only
    it fails, as Unserializable; every frame decodes with the daemon's
    decoder (checked in pump); the worker lives on and keeps working."""
    pid = worker.handle.pid
    worker.send((1, "workers.builtin:echo", [1]),
                (2, "workers.testing:nested", [1000]),
                (3, "workers.builtin:echo", [3]),
                (4, "workers.testing:nested", [MAX_NESTING - 5]),
                (5, "workers.testing:nested", [MAX_NESTING + 5]))
    got = worker.wait_results({1, 2, 3, 4, 5})
    assert got[1].ok and value(got[1]) == 1
    assert got[3].ok and value(got[3]) == 3
    for key in (2, 5):
        assert not got[key].ok
        error = value(got[key])
        assert error["type"] == "Unserializable"
        assert str(MAX_NESTING) in error["message"]
    assert got[4].ok  # just inside the limit still goes through
    assert worker.handle.alive() and worker.handle.pid == pid
    worker.send((6, "workers.builtin:echo", ["after"]))
    assert value(worker.wait_results({6})[6]) == "after"


def test_an_exception_whose_str_raises_is_a_failed_result(worker: Worker) -> None:
    """The worker survives a task whose exception cannot be shown; the task
    fails (type: the exception's class) with a message saying why."""
    worker.send((1, "workers.testing:bad_str", []), (2, "workers.builtin:echo", [2]))
    got = worker.wait_results({1, 2})
    error = value(got[1])
    assert not got[1].ok
    assert error["type"] == "UnprintableFailure"
    assert "str() raised RuntimeError" in error["message"]
    assert got[2].ok and worker.handle.alive()


def test_a_huge_exception_message_is_cut_to_fit(worker: Worker) -> None:
    """A failure carries at most a bounded message: a 5 MB exception text
    cannot make a frame the daemon refuses."""
    worker.send((1, "workers.builtin:fail", ["x" * 5_000_000]))
    done = worker.wait_results({1})[1]
    error = value(done)
    assert error["type"] == "TaskFailure"
    assert error["message"].startswith("xxx") and "characters cut" in error["message"]
    assert len(done.value) < 64 * 1024
