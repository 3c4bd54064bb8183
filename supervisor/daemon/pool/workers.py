"""Worker I/O: start a worker, read its pipe, feed it, watch its deadline.

Reads what workers write (hello, result batches, stdout/stderr), hands
queued tasks to slots with free prefetch windows, and hands each task's one
result to ``PoolEvents.deliver``. The loop calls these as fds wake.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable

import structlog

from supervisor.core import policy
from supervisor.core.slots import SlotState
from supervisor.core.tasks import Task, plan
from supervisor.daemon.pool.interfaces import PipeBroken
from supervisor.daemon.pool.state import PoolState, WorkerSlot
from supervisor.daemon.zmqio import POLLERR, POLLIN, POLLOUT
from supervisor.protocol import Batch, Done, Hello, Result, encoder, error_raw, worker_decoder

log = structlog.get_logger("phalanxd")
S = SlotState


class WorkerIO:
    def __init__(self, state: PoolState) -> None:
        self.s = state
        # Set by the Pool: a spawn that failed is a death without a process.
        self.on_spawn_failed: Callable[[WorkerSlot, float], None] = lambda slot, now: None

    # ------------------------------------------------------------ start
    def start(self, slot: WorkerSlot) -> None:
        s = self.s
        now = time.monotonic()
        slot.move(S.STARTING)
        slot.generation += 1
        slot.running_since = 0.0
        slot.assigned = 0
        limit = s.cfg.workers.max_tasks_per_worker
        if limit:
            limit += int(limit * s.rng.uniform(0, s.cfg.workers.recycle_jitter))
        slot.task_limit = limit
        try:
            handle = s.spawner.spawn(slot.index, s.allow)
        except OSError as exc:
            log.error("worker_spawn_failed", slot=slot.index, error=str(exc))
            slot.move(S.EXITED)
            slot.last_exit = f"spawn failed: {exc}"
            s.counters.restarted("spawn_failed", slot.index, slot.last_exit)
            self.on_spawn_failed(slot, now)
            return
        slot.handle = handle
        slot.pid = handle.pid
        s.events.event("worker.spawned", slot=slot.index, pid=handle.pid,
                       generation=slot.generation)
        s.loop.watch(handle.fd, lambda ev: self._on_pipe(slot, ev))
        s.loop.watch(handle.sentinel, lambda ev: s.deaths.append(slot))
        for name, fd in handle.stream_fds().items():
            self._watch_stream(slot, name, fd)
        generation = slot.generation
        s.loop.at(now + s.cfg.restart.start_timeout, lambda: self._start_timeout(slot, generation))

    def _watch_stream(self, slot: WorkerSlot, name: str, fd: int) -> None:
        self.s.loop.watch(fd, lambda ev: self.read_stream(slot, name, fd))

    def read_stream(self, slot: WorkerSlot, name: str, fd: int) -> None:
        handle = slot.handle
        if handle is None:
            self.s.loop.unwatch(fd)
            return
        data = handle.read_stream(name)
        if data:
            self.s.outputs.of(slot.index)[name].write(data)
        if data is None or not handle.stream_open(name):
            self.s.loop.unwatch(fd)

    def _start_timeout(self, slot: WorkerSlot, generation: int) -> None:
        if slot.generation == generation and slot.state is S.STARTING and slot.handle:
            log.warning("worker_start_timeout", slot=slot.index, pid=slot.pid)
            slot.handle.signal_group(signal.SIGKILL)

    # ------------------------------------------------------------- read
    def _on_pipe(self, slot: WorkerSlot, ev: int) -> None:
        handle = slot.handle
        if handle is None:
            return
        if ev & POLLOUT:
            handle.flush()
            self.update_interest(slot)
        if ev & (POLLIN | POLLERR):
            self.read(slot)

    def read(self, slot: WorkerSlot) -> None:
        """Take in everything the worker wrote (results count once read)."""
        handle = slot.handle
        if handle is None:
            return
        try:
            frames = handle.read_frames()
        except PipeBroken as exc:
            self.pipe_broken(slot, str(exc))
            return
        now = time.monotonic()
        # A worker sends each result as its own message; the results of one
        # read are accounted as one batch (one estimate, one count per name).
        done: list[Done] = []
        for frame in frames:
            try:
                msg = worker_decoder.decode(frame)
            except Exception as exc:  # noqa: BLE001 - garbage on the pipe: the worker is unusable
                if not done or self._on_results(slot, done, now):
                    self.pipe_broken(slot, f"undecodable message: {exc}")
                return
            if isinstance(msg, Batch):
                done.extend(msg.done)
            elif isinstance(msg, Hello):
                if done and not self._on_results(slot, done, now):
                    return
                done = []
                self._on_hello(slot, msg, now)
        if done:
            self._on_results(slot, done, now)

    def pipe_broken(self, slot: WorkerSlot, why: str) -> None:
        """The pipe is at EOF or carried garbage; the sentinel reports the death.

        EOF is what a dying worker normally looks like, and its sentinel
        fires a moment later. A worker that closed its pipe but lives on,
        or wrote garbage, is unusable: it is killed (its held tasks are then
        accounted as for any crash).
        """
        handle = slot.handle
        if handle is None:
            return
        self.s.loop.unwatch(handle.fd)
        if not handle.eof:
            log.warning("worker_pipe_garbage", slot=slot.index, pid=slot.pid, why=why)
            handle.signal_group(signal.SIGKILL)
            return
        generation = slot.generation

        def still_alive() -> None:
            if slot.generation == generation and slot.handle is handle and handle.alive():
                log.warning("worker_pipe_closed_but_alive", slot=slot.index, pid=slot.pid)
                handle.signal_group(signal.SIGKILL)

        self.s.loop.at(time.monotonic() + 0.5, still_alive)

    def _on_hello(self, slot: WorkerSlot, hello: Hello, now: float) -> None:
        s = self.s
        if slot.state is not S.STARTING:
            return
        slot.move(S.RUNNING)
        slot.running_since = now
        s.known_tasks.update(hello.tasks)
        for error in hello.errors:
            log.error("task_module_import_failed", slot=slot.index, error=error)
        # "module: why" per module that failed: UnknownTask names it. Each
        # hello replaces the map, so a module fixed by a reload clears it.
        s.import_errors = {e.partition(": ")[0]: e.partition(": ")[2] for e in hello.errors}
        if not hello.noting:  # its hand-offs are recorded before it gets them
            s.events.cannot_note(slot.index)
        log.info("worker_started", slot=slot.index, pid=hello.pid, generation=slot.generation)
        s.events.event("worker.started", slot=slot.index, pid=hello.pid,
                       generation=slot.generation)
        if all(x.state is S.RUNNING for x in s.slots):
            s.events.all_running()

    def _on_results(self, slot: WorkerSlot, done: list[Done], now: float) -> bool:
        s = self.s
        inflight = slot.inflight
        if len(done) > len(inflight):
            self.pipe_broken(slot, "more results than tasks held")
            return False
        slot.observe(now, len(done))
        latency = s.meters.latency
        names: dict[str, int] = {}  # tasks finished per name, this batch (observe/)
        for d in done:
            task = inflight.popleft()
            if task.key != d.key:
                inflight.appendleft(task)
                self.pipe_broken(slot, f"result for task {d.key}, expected {task.key}")
                return False
            latency.add(now - task.accepted_at)
            names[task.name] = names.get(task.name, 0) + 1
            if d.ok:
                result = Result(task.id, task.name, True, task.attempts + 1, value=d.value)
                slot.tasks_done += 1
            else:
                result = Result(task.id, task.name, False, task.attempts + 1, error=d.value)
                slot.tasks_failed += 1
            self.deliver(task, result)
        if done:  # the batch's time on the worker, split evenly (observe/)
            s.counters.ran(names, (now - slot.head_since) / len(done))
        slot.head_since = now
        if slot.task_limit and slot.assigned >= slot.task_limit and not slot.recycle:
            self.mark_recycle(slot, "max_tasks_per_worker")
        return True

    def deliver(self, task: Task, result: Result) -> None:
        """The task's one result: out of the table, to its submitters."""
        self.s.table.finish(task, result.ok, result)
        self.s.meters.count(task.name, result.ok)
        self.s.events.deliver(task, result)

    def fail(self, task: Task, type_: str, message: str) -> None:
        result = Result(task.id, task.name, False, task.attempts, error=error_raw(type_, message))
        self.deliver(task, result)

    def mark_recycle(self, slot: WorkerSlot, reason: str) -> None:
        """Replace this slot's worker once it has finished what it holds."""
        slot.recycle = True
        self.s.maintenance = True
        log.info("worker_recycling", slot=slot.index, pid=slot.pid, reason=reason)
        self.s.events.event("worker.recycling", slot=slot.index, pid=slot.pid, reason=reason)

    # -------------------------------------------------------- deadlines
    def running(self, slot: WorkerSlot) -> tuple[Task, float] | None:
        """The task this slot's worker is running and when it started it."""
        handle = slot.handle
        if handle is None or not slot.inflight:
            return None
        key, started = handle.running()
        if key is None:  # unknown: the oldest held task is the running one
            return slot.inflight[0], slot.head_since
        for task in slot.inflight:
            if task.key == key:
                return task, (slot.head_since if math.isnan(started) else started)
        return None  # it finished that one and has not started the next

    def next_deadline(self) -> float | None:
        when: float | None = None
        for slot in self.s.slots:
            if slot.inflight and slot.timed_out is None:
                found = self.running(slot)
                if found is not None:
                    due = policy.deadline(*found)
                    if due is not None and (when is None or due < when):
                        when = due
        return when

    def check_deadlines(self, now: float) -> None:
        """Kill a worker whose running task is past its own deadline.

        Only the running task's deadline counts (its own start time): tasks
        waiting behind it in the prefetch window have not started, and
        ``timed_out`` names exactly the task charged Timeout when the
        worker's death is accounted (recovery.py).
        """
        for slot in self.s.slots:
            if not slot.inflight or slot.timed_out is not None:
                continue
            found = self.running(slot)
            if found is None:
                continue
            task, started = found
            due = policy.deadline(task, started)
            if due is not None and now >= due and slot.handle is not None:
                slot.timed_out = task.key
                log.warning("task_timeout", id=task.id, task=task.name, slot=slot.index,
                            timeout=task.timeout)
                slot.handle.signal_group(signal.SIGKILL)

    # --------------------------------------------------------- dispatch
    def dispatch(self, now: float) -> None:
        s = self.s
        table = s.table
        handoffs = []
        commit_first = False
        for slot, n in plan(len(table.queue), s.slots):
            if slot.handle is None:
                continue
            was_idle = not slot.inflight
            tasks = table.assign(slot, n)
            s.counters.dispatched(tasks, now)  # queue wait (observe/)
            if not s.events.handed_off(slot.index, slot.generation, tasks):
                commit_first = True
            if was_idle:
                slot.head_since = now
            handoffs.append((slot, tasks))
        if not handoffs:
            return
        # This turn's commit records these hand-offs while the workers run
        # them (journal.py says why, and how a task that kills the daemon
        # before it is still charged); a retry is recorded first (the
        # journal says which). If the journal cannot write (a failing or
        # full disk), the work still goes out: acks and results wait for
        # the journal anyway; what that window can miss is a retry's
        # earlier crash charge, held in memory until a commit lands.
        if commit_first:
            s.events.commit()
        for slot, tasks in handoffs:
            handle = slot.handle
            assert handle is not None
            handle.write(encoder.encode(
                [(t.key, t.name, t.args, t.kwargs, t.soft_timeout, t.chunk, t.digest)
                 for t in tasks]
            ))
            if s.events.wants_event("task.assigned"):
                s.events.event("task.assigned", ids=[t.id for t in tasks], slot=slot.index,
                               pid=slot.pid)
            if handle.wants_write:
                self.update_interest(slot)

    def update_interest(self, slot: WorkerSlot) -> None:
        handle = slot.handle
        if handle is None or not self.s.loop.watching(handle.fd):
            return
        self.s.loop.modify(handle.fd, POLLIN | (POLLOUT if handle.wants_write else 0))
