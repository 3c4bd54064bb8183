"""The I/O side of worker slots: spawning, pipes, results, dispatch.

Reads what workers write (hello, result batches, stdout/stderr), hands
queued tasks to slots with free prefetch windows, and delivers each task's
one result to its submitter(s) and the publisher. Part of the Daemon
(a mixin): the loop in daemon.py calls these as file descriptors wake.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import structlog

from supervisor.core.slots import Slot, SlotState
from supervisor.core.tasks import ReplyGroup, Task, plan
from supervisor.daemon.output import RingLog
from supervisor.daemon.state import DaemonState
from supervisor.daemon.workerproc import PipeBroken, WorkerHandle
from supervisor.daemon.zmqio import POLLERR, POLLIN, POLLOUT
from supervisor.protocol import (
    Batch,
    Hello,
    Result,
    Results,
    encoder,
    error_raw,
    worker_decoder,
)

log = structlog.get_logger("phalanxd")
S = SlotState


class SlotIO(DaemonState):
    """Methods of Daemon; ``self`` is the daemon (see daemon.py)."""

    def start_slot(self, slot: Slot) -> None:
        now = time.monotonic()
        slot.move(S.STARTING)
        slot.generation += 1
        slot.running_since = 0.0
        slot.assigned = 0
        limit = self.cfg.workers.max_tasks_per_worker
        if limit:
            limit += int(limit * self.rng.uniform(0, self.cfg.workers.recycle_jitter))
        slot.task_limit = limit
        try:
            handle = WorkerHandle.spawn(
                self.mp, slot.index, self.allow, self.cfg.tasks.max_message_bytes
            )
            handle.fs_generation = self.fs_generation
        except OSError as exc:
            log.error("worker_spawn_failed", slot=slot.index, error=str(exc))
            slot.move(S.EXITED)
            slot.last_exit = f"spawn failed: {exc}"
            self._after_exit(slot, now)
            return
        slot.handle = handle
        slot.pid = handle.pid
        self.publisher.event(
            "worker.spawned", slot=slot.index, pid=handle.pid, generation=slot.generation
        )
        self._watch(handle.fd, lambda ev: self._on_pipe(slot, ev))
        self._watch(handle.sentinel, lambda ev: self._deaths.append(slot))
        for name, conn in handle.streams.items():
            self._watch_stream(slot, handle, name, conn.fileno())
        generation = slot.generation
        self.at(now + self.cfg.restart.start_timeout, lambda: self._start_timeout(slot, generation))

    def output_of(self, index: int) -> dict[str, RingLog]:
        logs_ = self.outputs.get(index)
        if logs_ is None:
            out = self.cfg.output
            folder = Path(out.dir) if out.dir else None
            logs_ = {
                name: RingLog(
                    out.ring_bytes,
                    folder / f"worker-{index}.{name}.log" if folder else None,
                    out.max_bytes,
                    out.backups,
                )
                for name in ("stdout", "stderr")
            }
            self.outputs[index] = logs_
        return logs_

    def _watch_stream(self, slot: Slot, handle: WorkerHandle, name: str, fd: int) -> None:
        self._watch(fd, lambda ev: self._on_stream(slot, handle, name, fd))

    def _on_stream(self, slot: Slot, handle: WorkerHandle, name: str, fd: int) -> None:
        data = handle.read_stream(name)
        if data:
            self.output_of(slot.index)[name].write(data)
        if data is None or handle.streams[name].closed:
            self._unwatch(fd)

    def _start_timeout(self, slot: Slot, generation: int) -> None:
        if slot.generation == generation and slot.state is S.STARTING and slot.handle:
            log.warning("worker_start_timeout", slot=slot.index, pid=slot.pid)
            slot.handle.signal_group(signal.SIGKILL)

    def _on_pipe(self, slot: Slot, ev: int) -> None:
        handle: WorkerHandle = slot.handle
        if ev & POLLOUT:
            handle.flush()
            self._update_interest(slot)
        if not ev & (POLLIN | POLLERR):
            return
        self._read_worker(slot)

    def _read_worker(self, slot: Slot) -> None:
        handle: WorkerHandle = slot.handle
        try:
            frames = handle.read_frames()
        except PipeBroken as exc:
            self._pipe_broken(slot, str(exc))
            return
        now = time.monotonic()
        for frame in frames:
            try:
                msg = worker_decoder.decode(frame)
            except Exception as exc:  # noqa: BLE001 - garbage on the pipe: the worker is unusable
                self._pipe_broken(slot, f"undecodable message: {exc}")
                return
            if isinstance(msg, Batch):
                if not self._on_results(slot, msg, now):
                    return
            elif isinstance(msg, Hello):
                self._on_hello(slot, msg, now)

    def _pipe_broken(self, slot: Slot, why: str) -> None:
        """The pipe is at EOF or carried garbage; the sentinel reports the death.

        EOF is what a dying worker normally looks like, and its sentinel
        fires a moment later. A worker that closed its pipe but lives on,
        or wrote garbage, is unusable: it is killed (its held tasks are then
        accounted as for any crash).
        """
        handle: WorkerHandle = slot.handle
        self._unwatch(handle.fd)
        if not handle.eof:
            log.warning("worker_pipe_garbage", slot=slot.index, pid=slot.pid, why=why)
            handle.signal_group(signal.SIGKILL)
            return
        generation = slot.generation

        def still_alive() -> None:
            if slot.generation == generation and slot.handle is handle and handle.alive():
                log.warning("worker_pipe_closed_but_alive", slot=slot.index, pid=slot.pid)
                handle.signal_group(signal.SIGKILL)

        self.at(time.monotonic() + 0.5, still_alive)

    def _on_hello(self, slot: Slot, hello: Hello, now: float) -> None:
        if slot.state is not S.STARTING:
            return
        slot.move(S.RUNNING)
        slot.running_since = now
        self.known_tasks.update(hello.tasks)
        for error in hello.errors:
            log.error("task_module_import_failed", slot=slot.index, error=error)
        log.info("worker_started", slot=slot.index, pid=hello.pid, generation=slot.generation)
        self.publisher.event(
            "worker.started", slot=slot.index, pid=hello.pid, generation=slot.generation
        )
        if not self.ready_sent and all(s.state is S.RUNNING for s in self.slots):
            self.ready_sent = True
            log.info("daemon_ready", workers=len(self.slots), boot=self.boot)
            self.notifier.ready(self._status_line())
            self.publisher.event("supervisor.ready", workers=len(self.slots))

    def _on_results(self, slot: Slot, batch: Batch, now: float) -> bool:
        inflight = slot.inflight
        done = batch.done
        if len(done) > len(inflight):
            self._pipe_broken(slot, "more results than tasks held")
            return False
        slot.observe(now, len(done))
        latency = self.latency
        counts = self.task_counts
        for d in done:
            task = inflight.popleft()
            if task.key != d.key:
                inflight.appendleft(task)
                self._pipe_broken(slot, f"result for task {d.key}, expected {task.key}")
                return False
            latency.add(now - task.accepted_at)
            count = counts.get(task.name)
            if count is None:
                count = counts[task.name] = [0, 0]
            if d.ok:
                result = Result(task.id, task.name, True, task.attempts + 1, value=d.value)
                slot.tasks_done += 1
                count[0] += 1
            else:
                result = Result(task.id, task.name, False, task.attempts + 1, error=d.value)
                slot.tasks_failed += 1
                count[1] += 1
            self._deliver(task, result)
        slot.head_since = now
        if slot.task_limit and slot.assigned >= slot.task_limit and not slot.recycle:
            self.recycle_slot(slot, "max_tasks_per_worker")
        return True

    def _deliver(self, task: Task, result: Result) -> None:
        """Queue a task's one result for its submitter(s) and subscribers."""
        self.journal.finish(task, result)  # journal: recorded before it is sent
        self.table.finish(task, result.ok, result)
        self._reply_to(task.route, task.group, result)
        if task.extra:
            for route, group in task.extra:
                self._reply_to(route, group, result)
        bucket = self._published.get(task.name)
        if bucket is None:
            self._published[task.name] = [result]
        else:
            bucket.append(result)

    def _reply_to(self, route: bytes | None, group: ReplyGroup | None, result: Result) -> None:
        if group is not None:
            group.results.append(result)
            group.waiting -= 1
            if group.waiting == 0:  # journal: held until this turn's commit
                self.journal.hold(group.route, encoder.encode(Results(group.results)), True)
        elif route is not None:
            bucket = self._replies.get(route)
            if bucket is None:
                self._replies[route] = [result]
            else:
                bucket.append(result)

    def fail_task(self, task: Task, type_: str, message: str) -> None:
        count = self.task_counts.setdefault(task.name, [0, 0])
        count[1] += 1
        result = Result(task.id, task.name, False, task.attempts, error=error_raw(type_, message))
        self._deliver(task, result)

    def _check_deadlines(self, now: float) -> None:
        for slot in self.slots:
            if not slot.inflight or slot.handle is None:
                continue
            head = slot.inflight[0]
            if head.timeout > 0 and now >= slot.head_since + head.timeout:
                if slot.timed_out == head.key:
                    continue  # already killed; waiting for its sentinel
                slot.timed_out = head.key
                log.warning("task_timeout", id=head.id, task=head.name, slot=slot.index, timeout=head.timeout)
                slot.handle.signal_group(signal.SIGKILL)

    def _dispatch(self, now: float) -> None:
        table = self.table
        handoffs = []
        for slot, n in plan(len(table.queue), self.slots):
            was_idle = not slot.inflight
            tasks = table.assign(slot, n)
            if was_idle:
                slot.head_since = now
            self.journal.started(slot.index, slot.generation, tasks)  # journal
            handoffs.append((slot, tasks))
        # journal: recorded as handed off before any worker can start them
        self.journal.commit()
        for slot, tasks in handoffs:
            handle: WorkerHandle = slot.handle
            handle.write(
                encoder.encode(
                    [(t.key, t.name, t.args, t.kwargs, t.soft_timeout, t.chunk) for t in tasks]
                )
            )
            if self.publisher.wants_event("task.assigned"):
                self.publisher.event("task.assigned", ids=[t.id for t in tasks],
                                     slot=slot.index, pid=slot.pid)
            if handle.wants_write:
                self._update_interest(slot)

    def _update_interest(self, slot: Slot) -> None:
        handle: WorkerHandle | None = slot.handle
        if handle is None or handle.fd not in self._handlers:
            return
        flags = POLLIN | (POLLOUT if handle.wants_write else 0)
        self.poller.modify(handle.fd, flags)
