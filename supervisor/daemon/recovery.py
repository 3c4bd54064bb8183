"""What happens when a worker dies: accounting, retries, restarts.

The task the worker was running is charged an attempt (retried or failed
with WorkerCrashed/Timeout, quarantined when it keeps killing workers);
the rest of what it held goes back to the queue uncharged; the slot is
restarted at once, sent to BACKOFF, or FATAL, as policy.py decides, with
the whole pool's crash-loop intensity on top. Also recycling (task count,
memory) and reaping processes that escaped their worker. Part of the
Daemon (a mixin).
"""

from __future__ import annotations

import time

import structlog

from supervisor.core import policy
from supervisor.core.slots import Slot, SlotState
from supervisor.daemon import reaper
from supervisor.daemon.observe.counters import restart_reason
from supervisor.daemon.state import DaemonState
from supervisor.daemon.workerproc import WorkerHandle, reap_group, stop_forkserver
from supervisor.errors import TIMEOUT, WORKER_CRASHED, describe_exit

log = structlog.get_logger("phalanxd")
S = SlotState


class Recovery(DaemonState):
    """Methods of Daemon; ``self`` is the daemon (see daemon.py)."""

    def _handle_deaths(self, now: float) -> None:
        """Account for dead workers, re-dispatch their tasks, then respawn.

        Re-dispatch comes first: a retried task goes to a live idle worker at
        once instead of waiting behind the fork of the replacement.
        """
        deaths, self._deaths = self._deaths, []
        self._restarts_deferred = []
        try:
            for slot in deaths:
                self._on_death(slot, now)
            if self.table.queue:
                self._dispatch(now)
        finally:
            restarts, self._restarts_deferred = self._restarts_deferred, None
        for slot in restarts:
            if slot.state is S.EXITED:
                self.start_slot(slot)

    def _on_death(self, slot: Slot, now: float) -> None:
        handle: WorkerHandle | None = slot.handle
        if handle is None:
            return
        if not handle.conn.closed and handle.fd in self._handlers:
            self._read_worker(slot)  # results written before dying still count
        for name, conn in handle.streams.items():
            if not conn.closed:
                fd = conn.fileno()
                self._on_stream(slot, handle, name, fd)
                self._unwatch(fd)
        exitcode = handle.exitcode()
        how = describe_exit(exitcode)
        running_key = handle.running_key()
        if not handle.conn.closed:  # once closed, its fd number may be another worker's
            self._unwatch(handle.fd)
        self._unwatch(handle.sentinel)
        handle.release()
        reap_group(handle.pid)  # grandchildren the task left behind
        self.at(now + 0.01, self._reap_orphans)  # and those that left the group
        slot.handle = None
        pid, slot.pid = slot.pid, None
        slot.last_exit = how
        timed_out, slot.timed_out = slot.timed_out, None
        if slot.state is S.STOPPING:
            self.table.requeue(slot)
            slot.move(S.STOPPED)
            log.info("worker_stopped", slot=slot.index, pid=pid, exit=how)
            self.publisher.event("worker.stopped", slot=slot.index, pid=pid, exit=how)
            if slot.recycle and not self.stopping_workers:
                slot.recycle = False
                self.counters.restarted("recycle", slot.index, how)  # observe
                self.start_slot(slot)
            return
        slot.move(S.EXITED)
        if not self.stopping_workers:  # observe: why workers restart
            self.counters.restarted(restart_reason(exitcode, timed_out is not None), slot.index,
                                    f"worker {slot.index} (pid {pid}) {how}")
        log.warning("worker_exited", slot=slot.index, pid=pid, exit=how, exitcode=exitcode)
        self.publisher.event(
            "worker.exited", slot=slot.index, pid=pid, exit=how, exitcode=exitcode
        )
        charge = self.table.charge_death(slot, running_key)
        if charge is not None:
            task = charge.task
            if timed_out is not None and timed_out == task.key:
                reason, kind = f"task ran past its {task.timeout:g}s timeout", TIMEOUT
                crash_detail = f"{reason}; worker {slot.index} (pid {pid}) was killed"
            else:
                kind = WORKER_CRASHED
                crash_detail = (
                    f"worker {slot.index} (pid {pid}) died with {how} while running this task"
                )
            retry = charge.retry and (kind != TIMEOUT or task.retry_timeouts)
            if retry:
                self.counters.retried(kind, slot.index, task.name, crash_detail)  # observe
                log.info("task_retried", id=task.id, task=task.name, attempt=task.attempts, why=crash_detail)
                self.publisher.event(
                    "task.retried", id=task.id, task=task.name, attempts=task.attempts,
                    reason=kind, exit=how, slot=slot.index,
                )
            else:
                if charge.retry:  # a timeout that we chose not to retry
                    self.table.queue.remove(task)
                    self.table.retried -= 1
                if kind == TIMEOUT and charge.retry:
                    message = f"{crash_detail} (timeouts are not retried: tasks.retry_timeouts)"
                else:
                    message = f"{crash_detail} (attempt {task.attempts} of {task.max_attempts})"
                if kind == WORKER_CRASHED and task.crashes >= 2:
                    self.table.quarantined += 1
                    self.counters.quarantined(slot.index, task.name, crash_detail)  # observe
                    log.warning("task_quarantined", id=task.id, task=task.name, crashes=task.crashes)
                    self.publisher.event(
                        "task.quarantined", id=task.id, task=task.name, crashes=task.crashes, exit=how
                    )
                    message += f"; quarantined after killing {task.crashes} workers"
                self.fail_task(task, kind, message)
        self._after_exit(slot, now)

    def _after_exit(self, slot: Slot, now: float) -> None:
        if self.stopping_workers:
            slot.move(S.STOPPED)
            return
        if policy.stable(slot, now, self.cfg.restart):
            slot.backoffs = 0
        decision = policy.decide(slot, now, self.cfg.restart, self.rng)
        slot.restart_count += 1
        if policy.pool_crash_loop(self._pool_restarts, now, self.cfg.restart):
            if not self._pool_crash_loop:
                self._pool_crash_loop = True
                log.error("pool_crash_loop", restarts=len(self._pool_restarts),
                          period=self.cfg.restart.daemon_period)
                self.publisher.event("supervisor.crash_loop", restarts=len(self._pool_restarts))
            if decision.action == "restart":
                decision = policy.Decision("backoff", self.cfg.restart.backoff_max)
        elif self._pool_crash_loop:
            self._pool_crash_loop = False
            log.info("pool_crash_loop_over")
            self.publisher.event("supervisor.crash_loop_over")
        if decision.action == "restart":
            if self._restarts_deferred is not None:
                self._restarts_deferred.append(slot)
            else:
                self.start_slot(slot)
        elif decision.action == "backoff":
            slot.move(S.BACKOFF)
            slot.backoffs += 1
            log.warning("worker_backoff", slot=slot.index, delay=round(decision.delay, 3), backoffs=slot.backoffs)
            self.publisher.event("worker.backoff", slot=slot.index, delay=decision.delay, backoffs=slot.backoffs)
            self.at(now + decision.delay, lambda: self._leave_backoff(slot))
        else:
            slot.move(S.FATAL)
            log.error("worker_fatal", slot=slot.index, cooldown=decision.delay)
            self.publisher.event("worker.fatal", slot=slot.index, cooldown=decision.delay)
            if decision.delay > 0:
                self.at(now + decision.delay, lambda: self._leave_fatal(slot))

    def _leave_backoff(self, slot: Slot) -> None:
        if slot.state is S.BACKOFF and not self.stopping_workers:
            self.start_slot(slot)

    def _leave_fatal(self, slot: Slot) -> None:
        if slot.state is S.FATAL and not self.stopping_workers:
            slot.backoffs = 0
            slot.restarts.clear()
            log.info("worker_fatal_cooldown_over", slot=slot.index)
            self.start_slot(slot)

    def _reap_orphans(self) -> None:
        if not self.subreaper:
            return
        self._retire_old_forkservers()
        keep = reaper.multiprocessing_helpers()
        keep.update(s.handle.pid for s in self.slots if s.handle is not None)
        keep.update(fs._forkserver_pid for fs in self._old_forkservers.values()
                    if getattr(fs, "_forkserver_pid", None))
        found = reaper.reap_orphans(keep)
        if found:
            log.info("orphans_reaped", count=found)
            # Killed ones become zombies a moment later: reap them soon.
            self.at(time.monotonic() + 0.05, self._reap_orphans)

    def _retire_old_forkservers(self) -> None:
        """Stop each forkserver a reload replaced, once its last worker died."""
        for generation, server in list(self._old_forkservers.items()):
            if not any(s.handle is not None and s.handle.fs_generation == generation
                       for s in self.slots):
                stop_forkserver(server)
                del self._old_forkservers[generation]
                log.info("old_forkserver_stopped", generation=generation)

    def recycle_slot(self, slot: Slot, reason: str) -> None:
        """Replace this slot's worker once it has finished what it holds."""
        slot.recycle = True
        self._maintenance = True
        log.info("worker_recycling", slot=slot.index, pid=slot.pid, reason=reason)
        self.publisher.event("worker.recycling", slot=slot.index, pid=slot.pid, reason=reason)

    def _check_memory(self) -> None:
        limit = self.cfg.workers.max_memory_mb * 1024 * 1024
        if not limit:
            return
        for slot in self.slots:
            if slot.state is S.RUNNING and not slot.recycle and slot.handle is not None:
                rss, _ = slot.handle.usage()
                if rss is not None and rss > limit:
                    self.recycle_slot(slot, f"max_memory_mb: rss {rss // (1024 * 1024)} MiB")
