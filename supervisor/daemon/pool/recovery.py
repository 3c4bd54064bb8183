"""A worker died: account for what it held, then restart, back off or stop.

The task it was running is charged an attempt and judged (core.policy:
retry, fail, quarantine); the rest of what it held goes back to the queue
uncharged; the slot restarts at once, goes to BACKOFF, or FATAL, as the
policy decides (a death a task caused restarts at once: the task pays, not
the slot). Also: memory limits and processes that escaped their worker.

Ordering rules (each asserted or built into the structure):
- A dead worker's pipe is read before it is unwatched and closed: results
  it wrote before dying count, or their tasks would run twice.
- Unwatch before release: a closed fd's number is soon another worker's.
- Re-dispatch before respawning: a retried task goes to a live idle worker
  at once instead of waiting behind the fork of the replacement.
"""

from __future__ import annotations

import time

import structlog

from supervisor.core import policy
from supervisor.core.slots import SlotState
from supervisor.daemon.observe.counters import restart_reason
from supervisor.daemon.pool.state import PoolState, WorkerSlot
from supervisor.daemon.pool.workers import WorkerIO
from supervisor.errors import describe_exit

log = structlog.get_logger("phalanxd")
S = SlotState


class Recovery:
    def __init__(self, state: PoolState, io: WorkerIO) -> None:
        self.s = state
        self.io = io
        io.on_spawn_failed = self.after_exit

    def handle_deaths(self, now: float) -> None:
        """Account for this turn's dead workers, re-dispatch, then respawn."""
        s = self.s
        deaths, s.deaths = s.deaths, []
        s.deferred = []
        try:
            for slot in deaths:
                self.on_death(slot, now)
            if s.table.queue:
                self.io.dispatch(now)  # before any respawn (see the module doc)
        finally:
            restarts, s.deferred = s.deferred, None
        for slot in restarts:
            if slot.state is S.EXITED:
                self.io.start(slot)

    def on_death(self, slot: WorkerSlot, now: float) -> None:
        s = self.s
        handle = slot.handle
        if handle is None:
            return
        if handle.pipe_open and s.loop.watching(handle.fd):
            self.io.read(slot)  # results written before dying still count
        for name, fd in handle.stream_fds().items():
            self.io.read_stream(slot, name, fd)
            s.loop.unwatch(fd)
        exitcode = handle.exitcode()
        how = describe_exit(exitcode)
        running_key, _ = handle.running()
        if handle.pipe_open:  # once closed, its fd number may be another worker's
            s.loop.unwatch(handle.fd)
        s.loop.unwatch(handle.sentinel)
        handle.release()
        s.spawner.buried(handle)  # grandchildren left in its process group
        s.loop.at(now + 0.01, self.reap_orphans)  # and those that left the group
        slot.handle = None
        pid, slot.pid = slot.pid, None
        slot.last_exit = how
        timed_out, slot.timed_out = slot.timed_out, None
        s.events.worker_gone(slot.index)  # whatever it ran, its note says no more
        if slot.state is S.STOPPING:
            s.table.requeue(slot)
            slot.move(S.STOPPED)
            log.info("worker_stopped", slot=slot.index, pid=pid, exit=how)
            s.events.event("worker.stopped", slot=slot.index, pid=pid, exit=how)
            if slot.recycle and not s.stopping:
                slot.recycle = False
                s.counters.restarted("recycle", slot.index, how)
                self.io.start(slot)
            return
        slot.move(S.EXITED)
        log.warning("worker_exited", slot=slot.index, pid=pid, exit=how, exitcode=exitcode)
        s.events.event("worker.exited", slot=slot.index, pid=pid, exit=how, exitcode=exitcode)
        if not s.stopping:  # why workers restart (observe/)
            s.counters.restarted(restart_reason(exitcode, timed_out is not None), slot.index,
                                 f"worker {slot.index} (pid {pid}) {how}")
        task = s.table.charge_death(slot, running_key)
        if task is not None:
            was_timeout = timed_out is not None and timed_out == task.key
            if was_timeout:
                detail = (f"task ran past its {task.timeout:g}s timeout; "
                          f"worker {slot.index} (pid {pid}) was killed")
            else:
                detail = f"worker {slot.index} (pid {pid}) died with {how} while running this task"
            verdict = policy.judge(task, was_timeout, detail)
            if verdict.action == "retry":
                s.table.retry(task)
                s.events.charged(task)  # recorded with this turn, not at its next hand-off
                s.counters.retried(verdict.kind, slot.index, task.name, detail)
                log.info("task_retried", id=task.id, task=task.name, attempt=task.attempts,
                         why=detail)
                s.events.event("task.retried", id=task.id, task=task.name,
                               attempts=task.attempts, reason=verdict.kind, exit=how,
                               slot=slot.index)
            else:
                if verdict.action == "quarantine":
                    s.table.quarantined += 1
                    s.counters.quarantined(slot.index, task.name, detail)
                    log.warning("task_quarantined", id=task.id, task=task.name,
                                crashes=task.crashes)
                    s.events.event("task.quarantined", id=task.id, task=task.name,
                                   crashes=task.crashes, exit=how)
                self.io.fail(task, verdict.kind, verdict.message)
        # A death the running task explains (a crash or its own deadline) is
        # the task's to pay for; the slot restarts at once (core.policy).
        self.after_exit(slot, now, caused_by_task=task is not None)

    def after_exit(self, slot: WorkerSlot, now: float, caused_by_task: bool = False) -> None:
        s = self.s
        if s.stopping:
            slot.move(S.STOPPED)
            return
        cfg = s.cfg.restart
        if policy.stable(slot, now, cfg):
            slot.backoffs = 0
        decision = policy.decide(slot, now, cfg, s.rng, caused_by_task=caused_by_task)
        slot.restarts.clear()
        slot.restarts.extend(decision.history)
        slot.restart_count += 1
        if not caused_by_task:
            s.pool_restarts = policy.pool_history(s.pool_restarts, now, cfg)
            looping = policy.pool_crash_loop(s.pool_restarts, cfg)
            if looping and not s.crash_loop:
                log.error("pool_crash_loop", restarts=len(s.pool_restarts),
                          period=cfg.daemon_period)
                s.events.event("supervisor.crash_loop", restarts=len(s.pool_restarts))
            elif s.crash_loop and not looping:
                log.info("pool_crash_loop_over")
                s.events.event("supervisor.crash_loop_over")
            s.crash_loop = looping
            decision = policy.brake(decision, looping, cfg)
        if decision.action == "restart":
            if s.deferred is not None:
                s.deferred.append(slot)
            else:
                self.io.start(slot)
        elif decision.action == "backoff":
            slot.move(S.BACKOFF)
            slot.backoffs += 1
            log.warning("worker_backoff", slot=slot.index, delay=round(decision.delay, 3),
                        backoffs=slot.backoffs)
            s.events.event("worker.backoff", slot=slot.index, delay=decision.delay,
                           backoffs=slot.backoffs)
            s.loop.at(now + decision.delay, lambda: self._leave_backoff(slot))
        else:
            slot.move(S.FATAL)
            log.error("worker_fatal", slot=slot.index, cooldown=decision.delay)
            s.events.event("worker.fatal", slot=slot.index, cooldown=decision.delay)
            if decision.delay > 0:
                s.loop.at(now + decision.delay, lambda: self._leave_fatal(slot))

    def _leave_backoff(self, slot: WorkerSlot) -> None:
        if slot.state is S.BACKOFF and not self.s.stopping and slot in self.s.slots:
            self.io.start(slot)

    def _leave_fatal(self, slot: WorkerSlot) -> None:
        if slot.state is S.FATAL and not self.s.stopping and slot in self.s.slots:
            slot.backoffs = 0
            slot.restarts.clear()
            log.info("worker_fatal_cooldown_over", slot=slot.index)
            self.io.start(slot)

    def reap_orphans(self) -> None:
        keep = {x.handle.pid for x in self.s.slots if x.handle is not None}
        found = self.s.spawner.reap_orphans(keep)
        if found:
            log.info("orphans_reaped", count=found)
            # Killed ones become zombies a moment later: reap them soon.
            self.s.loop.at(time.monotonic() + 0.05, self.reap_orphans)

    def check_memory(self) -> None:
        limit = self.s.cfg.workers.max_memory_mb * 1024 * 1024
        if not limit:
            return
        for slot in self.s.slots:
            if slot.state is S.RUNNING and not slot.recycle and slot.handle is not None:
                rss, _ = slot.handle.usage()
                if rss is not None and rss > limit:
                    self.io.mark_recycle(slot, f"max_memory_mb: rss {rss // (1024 * 1024)} MiB")

