"""What the daemon holds, declared once for all of its parts.

The Daemon (daemon.py) is one object whose methods live in four files by
concern: the loop and sockets (daemon.py), worker I/O (slot_io.py), death
and recovery (recovery.py), operator-driven changes (lifecycle.py). Each
part subclasses ``DaemonState`` so the type checker knows every field and
every cross-part method; the fields are set in ``Daemon.__init__``/``start``.
"""

from __future__ import annotations

import itertools
import multiprocessing.context
import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from supervisor.config import Config
from supervisor.core.slots import Slot
from supervisor.core.stats import LatencyHistogram, RateMeter
from supervisor.core.tasks import TaskTable
from supervisor.daemon.journal import AnyJournal
from supervisor.daemon.notify import Notifier
from supervisor.daemon.output import RingLog
from supervisor.daemon.publisher import Publisher
from supervisor.daemon.reconfig import Change
from supervisor.protocol import Result


class DaemonState:
    cfg: Config
    boot: str
    started_mono: float
    table: TaskTable
    slots: list[Slot]
    allow: list[str]
    known_tasks: set[str]
    rng: random.Random
    notifier: Notifier
    paused: bool
    draining: bool
    drain_deadline: float
    stopping_workers: bool
    finished: bool
    ready_sent: bool
    exit_code: int
    unroutable: int
    subreaper: bool
    outputs: dict[int, dict[str, RingLog]]
    task_counts: dict[str, list[int]]
    latency: LatencyHistogram
    rate: RateMeter
    ctx: zmq.Context[zmq.Socket[bytes]] | None
    mp: multiprocessing.context.BaseContext
    poller: zmq.Poller
    intake: zmq.Socket[bytes]
    pub_sock: zmq.Socket[bytes]
    control: zmq.Socket[bytes]
    publisher: Publisher
    _timers: list[tuple[float, int, Callable[[], None]]]
    _timer_ids: itertools.count[int]
    _handlers: dict[Any, Callable[[int], None]]
    _deaths: list[Slot]
    _replies: dict[bytes, list[Result]]
    _published: dict[str, list[Result]]
    _maintenance: bool
    _pool_restarts: deque[float]
    _restarts_deferred: list[Slot] | None
    _pool_crash_loop: bool
    _lock_fd: int
    _zmq_recheck: set[zmq.Socket[bytes]]
    fs_generation: int
    _old_forkservers: dict[int, Any]
    journal: AnyJournal

    if TYPE_CHECKING:  # methods one part calls on another
        def at(self, when: float, fn: Callable[[], None]) -> None: ...
        def _watch(self, what: Any, handler: Callable[[int], None], flags: int = ...) -> None: ...
        def _unwatch(self, what: Any) -> None: ...
        def every(self, interval: float, fn: Callable[[], None]) -> None: ...
        def send_reply(self, route: bytes, body: bytes, req: bool = False) -> None: ...
        def flush_output(self) -> None: ...
        def _status_line(self) -> str: ...
        def start_slot(self, slot: Slot) -> None: ...
        def _read_worker(self, slot: Slot) -> None: ...
        def _dispatch(self, now: float) -> None: ...
        def fail_task(self, task: Any, type_: str, message: str) -> None: ...
        def output_of(self, index: int) -> dict[str, RingLog]: ...
        def _on_stream(self, slot: Slot, handle: Any, name: str, fd: int) -> None: ...
        def _on_death(self, slot: Slot, now: float) -> None: ...
        def _after_exit(self, slot: Slot, now: float) -> None: ...
        def _reap_orphans(self) -> None: ...
        def _stop_slot(self, slot: Slot, now: float) -> None: ...
        def recycle_all(self) -> None: ...
        def begin_drain(self) -> None: ...
        def stop_now(self) -> None: ...
        def reload(self) -> None: ...
        def _maintain(self, now: float) -> None: ...
        def _drain_step(self, now: float) -> None: ...
        def _check_deadlines(self, now: float) -> None: ...
        def _check_memory(self) -> None: ...
        def _handle_deaths(self, now: float) -> None: ...
        def recycle_slot(self, slot: Slot, reason: str) -> None: ...
        def forkserver_preload(self) -> list[str]: ...
        def start_slot_by_operator(self, slot: Slot) -> None: ...
        def stop_slot(self, slot: Slot) -> None: ...
        def restart_slot(self, slot: Slot) -> None: ...
        def reread(self) -> tuple[Config, list[Change]]: ...
        def update_from_file(self) -> list[Change]: ...
