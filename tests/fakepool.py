"""Fakes for the Pool's seams (supervisor/daemon/pool/interfaces.py).

A FakeHandle is a worker that does nothing by itself: the test reads what
the Pool wrote to it (``sent``), makes it say hello, finish tasks, start a
task at a given time, or die, and the FakeLoop runs timers when the test
moves its clock. No process, no fd, no sleep: microseconds per scenario.
"""

from __future__ import annotations

import heapq
import itertools
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from supervisor.config import Config, parse
from supervisor.core.tasks import Task
from supervisor.daemon.output import Outputs
from supervisor.daemon.pool import Pool
from supervisor.daemon.zmqio import POLLIN
from supervisor.protocol import NO_ARGS, NO_KWARGS, Batch, Done, Hello, Result, Work, encoder

_fds = itertools.count(1000)


class FakeHandle:
    def __init__(self, index: int, pid: int) -> None:
        self.index, self.pid = index, pid
        self.fd, self.sentinel = next(_fds), next(_fds)
        self.eof = False
        self.fs_generation = 0
        self.sent: list[Work] = []  # every task the pool handed this worker
        self.inbox: list[bytes] = []
        self.running_key: int | None = 0
        self.started = math.nan
        self.signals: list[int] = []
        self.code: int | None = None
        self.closed = False

    # -------------------------------------------------- the Handle protocol
    @property
    def pipe_open(self) -> bool:
        return not self.closed

    @property
    def wants_write(self) -> bool:
        return False

    def stream_fds(self) -> dict[str, int]:
        return {}

    def read_stream(self, name: str) -> bytes | None:
        return None

    def stream_open(self, name: str) -> bool:
        return False

    def write(self, payload: bytes) -> None:
        self.sent.extend(msgspec.msgpack.decode(payload, type=list[Work]))

    def flush(self) -> None:
        pass

    def read_frames(self) -> list[bytes]:
        frames, self.inbox = self.inbox, []
        return frames

    def running(self) -> tuple[int | None, float]:
        return self.running_key, self.started

    def exitcode(self) -> int | None:
        return self.code

    def alive(self) -> bool:
        return self.code is None

    def usage(self) -> tuple[int | None, float | None]:
        return 10 << 20, 0.0

    def signal_group(self, sig: int) -> None:
        self.signals.append(sig)

    def signal_tree(self, sig: int) -> None:
        self.signals.append(sig)

    def close_pipe(self) -> None:
        self.closed = True

    def release(self) -> None:
        self.closed = True


class FakeSpawner:
    def __init__(self) -> None:
        self.generation = 0
        self.handles: list[FakeHandle] = []
        self._pids = itertools.count(100)

    def spawn(self, index: int, allow: list[str]) -> FakeHandle:
        handle = FakeHandle(index, next(self._pids))
        self.handles.append(handle)
        return handle

    def renew(self, allow: list[str]) -> None:
        self.generation += 1

    def buried(self, handle: Any) -> None:
        pass

    def reap_orphans(self, keep: set[int]) -> int:
        return 0


class FakeLoop:
    def __init__(self) -> None:
        self.handlers: dict[Any, Callable[[int], None]] = {}
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self._ids = itertools.count()

    def watch(self, what: Any, handler: Callable[[int], None], flags: int = POLLIN) -> None:
        self.handlers[what] = handler

    def unwatch(self, what: Any) -> None:
        self.handlers.pop(what, None)

    def watching(self, what: Any) -> bool:
        return what in self.handlers

    def modify(self, what: Any, flags: int) -> None:
        pass

    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (when, next(self._ids), fn))

    def run_due(self, now: float) -> None:
        while self.timers and self.timers[0][0] <= now:
            heapq.heappop(self.timers)[2]()


class Ears:
    """The PoolEvents side: what the Pool delivered and announced."""

    def __init__(self) -> None:
        self.results: dict[str, Result] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.ready = 0

    def deliver(self, task: Task, result: Result) -> None:
        assert task.id not in self.results, f"{task.id} answered twice"
        self.results[task.id] = result

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def handed_off(self, slot: int, generation: int, tasks: list[Task]) -> bool:
        return True

    def worker_gone(self, slot: int) -> None:
        pass

    def cannot_note(self, slot: int) -> None:
        pass

    def charged(self, task: Task) -> None:
        pass

    def commit(self) -> bool:
        return True

    def wants_event(self, kind: str) -> bool:
        return True

    def all_running(self) -> None:
        self.ready += 1

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [f for k, f in self.events if k == kind]

    def error_type(self, task_id: str) -> str:
        return str(msgspec.msgpack.decode(self.results[task_id].error)["type"])


class Harness:
    """A Pool on fakes, with the moves a test makes."""

    def __init__(self, tmp: Path, **sections: dict[str, Any]) -> None:
        raw: dict[str, Any] = {"workers": {"count": 2}, "daemon": {"runtime_dir": str(tmp)}}
        for key, value in sections.items():
            raw.setdefault(key, {}).update(value)
        self.cfg: Config = parse(raw)
        self.spawner = FakeSpawner()
        self.loop = FakeLoop()
        self.ears = Ears()
        self.now = 1000.0
        self.pool = Pool(self.cfg, self.spawner, self.loop, self.ears,
                         Outputs(4096, None, 1 << 20, 0))
        self.pool.start()
        for slot in self.pool.slots:
            self.hello(slot.index)

    def handle(self, index: int) -> FakeHandle:
        slot = self.pool.slot(index)
        assert slot is not None and slot.handle is not None
        return slot.handle  # type: ignore[return-value]

    def _pipe(self, handle: FakeHandle) -> None:
        self.loop.handlers[handle.fd](POLLIN)

    def hello(self, index: int) -> None:
        handle = self.handle(index)
        handle.inbox.append(encoder.encode(Hello(handle.pid, ["m:f"], [])))
        self._pipe(handle)

    def submit(self, *ids: str, timeout: float = 0.0, max_attempts: int = 3) -> None:
        for task_id in ids:
            key = self.pool.table.next_key()
            self.pool.accept(Task(key, task_id, "m:f", NO_ARGS, NO_KWARGS, b"client",
                                  max_attempts, timeout, accepted_at=self.now))

    def turn(self, dt: float = 0.0) -> None:
        """One loop turn, ``dt`` seconds after the last."""
        self.now += dt
        self.pool.handle_deaths(self.now)
        self.loop.run_due(self.now)
        self.pool.work(self.now)
        self.pool.maintain(self.now)

    def held(self, index: int) -> list[str]:
        slot = self.pool.slot(index)
        assert slot is not None
        return [t.id for t in slot.inflight]

    def start(self, index: int, task_id: str) -> None:
        """The worker starts ``task_id`` now (its shared running value)."""
        handle = self.handle(index)
        handle.running_key = next(w.key for w in handle.sent if self._id(w.key) == task_id)
        handle.started = self.now

    def _id(self, key: int) -> str | None:
        task = self.pool.table.by_key.get(key)
        return task.id if task else None

    def finish(self, index: int, *ids: str) -> None:
        handle = self.handle(index)
        keys = {self._id(w.key): w.key for w in handle.sent}
        done = [Done(keys[i], True, msgspec.Raw(encoder.encode(i))) for i in ids]
        handle.inbox.append(encoder.encode(Batch(done)))
        self._pipe(handle)

    def die(self, index: int, sig: int = signal.SIGKILL) -> None:
        """The worker's sentinel fires (the loop notes the death)."""
        handle = self.handle(index)
        handle.code = -sig
        self.loop.handlers[handle.sentinel](POLLIN)
