"""The Pool: the one object that owns worker slots, the task table and the
worker handles. The daemon and its edges (intake, control, reload, drain)
use only the methods below; none of them writes the pool's fields.

Each loop turn the daemon calls, in this order::

    handle_deaths(now)   account for workers whose sentinel fired; re-dispatch
                         their tasks, then respawn
    (the loop's timers)
    work(now)            kill a worker whose running task is past its
                         deadline; hand queued tasks to free windows
    maintain(now)        retire/recycle marked slots, one at a time
"""

from __future__ import annotations

import random
import time

from supervisor.config import Config
from supervisor.core.slots import SlotState
from supervisor.core.tasks import ReplyGroup, Task, TaskTable
from supervisor.daemon.observe.counters import Counters
from supervisor.daemon.output import Outputs
from supervisor.daemon.pool.interfaces import PoolEvents, Spawner, Watcher
from supervisor.daemon.pool.maintenance import Maintenance
from supervisor.daemon.pool.recovery import Recovery
from supervisor.daemon.pool.state import Meters, PoolState, WorkerSlot
from supervisor.daemon.pool.workers import WorkerIO
from supervisor.protocol import Result

S = SlotState


class Pool:
    def __init__(self, cfg: Config, spawner: Spawner, loop: Watcher, events: PoolEvents,
                 outputs: Outputs, rng: random.Random | None = None) -> None:
        self._s = PoolState(cfg, spawner, loop, events, outputs, rng)
        self._io = WorkerIO(self._s)
        self._recovery = Recovery(self._s, self._io)
        self._shape = Maintenance(self._s, self._io)

    # ------------------------------------------------------------ reading
    @property
    def slots(self) -> list[WorkerSlot]:
        return self._s.slots

    @property
    def table(self) -> TaskTable:
        return self._s.table

    @property
    def meters(self) -> Meters:
        return self._s.meters

    @property
    def counters(self) -> Counters:
        return self._s.counters

    @property
    def known_tasks(self) -> set[str]:
        return self._s.known_tasks

    @property
    def import_errors(self) -> dict[str, str]:
        return self._s.import_errors

    @property
    def allow(self) -> list[str]:
        return self._s.allow

    def slot(self, index: int) -> WorkerSlot | None:
        for slot in self._s.slots:
            if slot.index == index:
                return slot
        return None

    def running(self, slot: WorkerSlot) -> tuple[Task, float] | None:
        """The task ``slot`` is running and when it started, if any."""
        return self._io.running(slot)

    def workers_running(self) -> int:
        return sum(1 for s in self._s.slots if s.state is S.RUNNING)

    def all_stopped(self) -> bool:
        return all(s.handle is None for s in self._s.slots)

    def next_deadline(self) -> float | None:
        return self._io.next_deadline()

    # ------------------------------------------------------------ intake
    def accept(self, task: Task) -> None:
        self._s.table.add(task)

    def find(self, task_id: str) -> Task | None:
        return self._s.table.by_id.get(task_id)

    def attach(self, task: Task, route: bytes | None, group: ReplyGroup | None) -> bool:
        """Another submitter of the same id gets its own copy of the result
        (False: that peer already waits for it)."""
        return task.also_notify(route, group)

    def cached(self, task_id: str) -> tuple[Result, int] | None:
        """A finished task's result by id, with its name-and-arguments digest."""
        return self._s.table.cached(task_id)

    # ---------------------------------------------------------- the turn
    def start(self) -> None:
        for slot in self._s.slots:
            self._io.start(slot)

    def handle_deaths(self, now: float) -> None:
        if self._s.deaths:
            self._recovery.handle_deaths(now)

    def work(self, now: float) -> None:
        self._io.check_deadlines(now)
        if self._s.table.queue:
            self._io.dispatch(now)

    def maintain(self, now: float) -> None:
        if self._s.maintenance:
            self._shape.maintain(now)

    def every_second(self) -> None:
        self._recovery.check_memory()
        self._recovery.reap_orphans()

    # ----------------------------------------------------------- operator
    def start_slot(self, slot: WorkerSlot) -> None:
        self._shape.start_slot(slot)

    def stop_slot(self, slot: WorkerSlot) -> None:
        self._shape.stop_slot(slot, time.monotonic())

    def restart_slot(self, slot: WorkerSlot) -> None:
        self._shape.restart_slot(slot, time.monotonic())

    def resize(self, target: int) -> None:
        self._shape.resize(target)

    def recycle_all(self) -> list[int]:
        self._shape.recycle_all()
        return [s.index for s in self._s.slots if s.recycle]

    def configure(self, cfg: Config) -> None:
        """Apply a new configuration's pool settings (see daemon/reload.py)."""
        s = self._s
        s.cfg = cfg
        s.table.resize_cache(cfg.tasks.result_cache, cfg.tasks.result_cache_bytes)
        for slot in s.slots:
            slot.max_window = cfg.workers.max_prefetch
        if list(cfg.tasks.allow) != s.allow:
            s.allow = list(cfg.tasks.allow)
            s.known_tasks = set()  # refilled by the new workers' hellos
            s.import_errors = {}
            self._shape.recycle_all()
        self._shape.resize(cfg.worker_count)

    # ---------------------------------------------------------------- end
    def fail_unfinished(self, type_: str, why: str) -> None:
        self._shape.fail_unfinished(type_, why)

    def stop_all(self, now: float) -> None:
        self._shape.stop_all(now)

    def kill_all(self) -> None:
        self._shape.kill_all()

    @property
    def stopping(self) -> bool:
        return self._s.stopping
