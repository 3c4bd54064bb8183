"""Changes the operator asks for: reload, resize, stop/start slots, drain.

Every change keeps the one rule: no accepted task is dropped. Slots that
must go (shrink) or be renewed (reload, allowlist change, recycling) are
marked and handled by ``_maintain`` once they hold no task, one slot in
transition at a time. Part of the Daemon (a mixin).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import structlog

from supervisor import config as config_mod
from supervisor.config import Config
from supervisor.core.slots import Slot, SlotState
from supervisor.daemon import logs, reconfig
from supervisor.daemon.state import DaemonState
from supervisor.daemon.workerproc import WorkerHandle, renew_forkserver
from supervisor.errors import ConfigError

log = structlog.get_logger("phalanxd")
S = SlotState


class Lifecycle(DaemonState):
    """Methods of Daemon; ``self`` is the daemon (see daemon.py)."""

    def reload(self) -> None:
        """SIGHUP: re-read the config file and apply it (as phalanxctl update)."""
        if self.draining:
            # READY=1 after STOPPING=1 would tell systemd we are up again,
            # and a grown pool would start workers the drain never stops.
            log.warning("reload_ignored_while_stopping")
            return
        # Before the first READY=1 systemd still waits for start-up: a
        # reload's READY=1 would report us up while workers are starting.
        # _on_hello sends it once every slot (added ones too) is RUNNING.
        announce = self.ready_sent
        if announce:
            self.notifier.reloading()
        self.publisher.event("supervisor.reloading")
        try:
            changes = self.update_from_file()
        except ConfigError as exc:
            log.error("reload_failed", error=str(exc))
            self.publisher.event("supervisor.reload_failed", error=str(exc))
        else:
            log.info("reload_done", changes=[c.key for c in changes])
        if announce:
            self.notifier.ready(self._status_line())

    def reread(self) -> tuple[Config, list[reconfig.Change]]:
        source = self.cfg.source
        if not source or source.startswith("<"):
            raise ConfigError("the daemon was started without --config; nothing to re-read")
        new = config_mod.load(source)
        return new, reconfig.diff(self.cfg, new)

    def update_from_file(self) -> list[reconfig.Change]:
        new, _ = self.reread()
        return self.apply_config(new)

    def apply_config(self, new: Config) -> list[reconfig.Change]:
        """Apply a new configuration without dropping an accepted task."""
        if self.draining:  # new workers now would outlive the drain
            raise ConfigError("the daemon is stopping; configuration not applied")
        old = self.cfg
        changes = reconfig.diff(old, new)
        self.cfg = reconfig.effective(old, new)
        for change in changes:
            if change.how == "daemon":
                log.warning("config_change_needs_restart", key=change.key, new=change.new)
        if (old.daemon.log_level, old.daemon.log_format) != (
            self.cfg.daemon.log_level, self.cfg.daemon.log_format
        ):
            logs.configure(self.cfg.daemon.log_level, self.cfg.daemon.log_format)
        self.table.resize_cache(self.cfg.tasks.result_cache)
        self._apply_output_config()
        for slot in self.slots:
            slot.max_window = self.cfg.workers.max_prefetch
        if list(self.cfg.tasks.allow) != self.allow:
            self.allow = list(self.cfg.tasks.allow)
            self.known_tasks = set()  # refilled by the new workers' hellos
            self.recycle_all()
        self.resize(self.cfg.worker_count)
        if changes:
            self.publisher.event("supervisor.updated", changes=[c.as_dict() for c in changes])
        return changes

    def _apply_output_config(self) -> None:
        out = self.cfg.output
        folder = Path(out.dir) if out.dir else None
        for index, rings in self.outputs.items():
            for name, ring in rings.items():
                path = folder / f"worker-{index}.{name}.log" if folder else None
                if path != ring.path:
                    ring.close()
                    ring.path = path
                ring.capacity, ring.max_bytes, ring.backups = out.ring_bytes, out.max_bytes, out.backups
                ring.write(b"")  # trims to a smaller capacity

    def resize(self, target: int) -> None:
        active = [s for s in self.slots if not s.retire]
        for slot in self.slots:  # growing again: keep slots still on their way out
            if slot.retire and len(active) < target:
                slot.retire = False
                active.append(slot)
        while len(active) < target:
            slot = Slot(len(self.slots), max_window=self.cfg.workers.max_prefetch)
            self.slots.append(slot)
            active.append(slot)
            self.start_slot(slot)
        for slot in sorted(active, key=lambda s: s.index)[target:]:
            slot.retire = True
            self._maintenance = True

    def recycle_all(self) -> None:
        """Rolling restart: every slot gets a fresh worker, one at a time,
        running the task code as it is now (a fresh forkserver, see
        workerproc.renew_forkserver)."""
        if self.cfg.workers.start_method == "forkserver":
            old = renew_forkserver(self.forkserver_preload())
            self._old_forkservers[self.fs_generation] = old
            self.fs_generation += 1
        for slot in self.slots:
            if not slot.retire:
                slot.recycle = True
        self._maintenance = True

    def stop_slot(self, slot: Slot) -> None:
        """Operator stop: the slot stays STOPPED; its tasks go to the others."""
        slot.recycle = False
        if slot.handle is not None:
            if slot.state is not S.STOPPING:
                self._stop_slot(slot, time.monotonic())
        elif slot.state in (S.BACKOFF, S.FATAL, S.EXITED):
            slot.move(S.STOPPED)

    def start_slot_by_operator(self, slot: Slot) -> None:
        if slot.state in (S.STOPPED, S.BACKOFF, S.FATAL):
            slot.backoffs = 0
            slot.restarts.clear()
            self.start_slot(slot)

    def restart_slot(self, slot: Slot) -> None:
        if slot.handle is None:
            self.start_slot_by_operator(slot)
            return
        slot.recycle = True
        if slot.state is not S.STOPPING:
            self._stop_slot(slot, time.monotonic())

    def _maintain(self, now: float) -> None:
        """Carry out retire/recycle intentions, never more than one slot down."""
        pending = False
        for slot in list(self.slots):
            if not (slot.retire or slot.recycle):
                continue
            pending = True
            if slot.handle is None:  # BACKOFF, FATAL or STOPPED: nothing to stop
                if slot.retire and slot.state is not S.STARTING:
                    if slot.state is not S.STOPPED:
                        slot.move(S.STOPPED)
                    self.slots.remove(slot)
                    self.publisher.event("worker.removed", slot=slot.index)
                elif slot.recycle:
                    slot.recycle = False
                continue
            if slot.state is not S.RUNNING or slot.inflight:
                continue  # let it finish what it holds
            if slot.recycle and not slot.retire:
                # One worker in transition at a time (a slot parked in
                # BACKOFF/FATAL/STOPPED does not hold the others back).
                others_down = any(
                    s is not slot and not s.retire and s.state in (S.STARTING, S.STOPPING)
                    for s in self.slots
                )
                if others_down:
                    continue
            self._stop_slot(slot, now)
        self._maintenance = pending
        if not self.slots and not self.stopping_workers:
            self._maintenance = False

    def begin_drain(self) -> None:
        """Stop intake, let queued and running work finish within the grace."""
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = time.monotonic() + self.cfg.shutdown.grace
        self.notifier.stopping()
        log.info("drain_started", unfinished=len(self.table), grace=self.cfg.shutdown.grace)
        self.publisher.event("supervisor.stopping", unfinished=len(self.table))

    def _drain_step(self, now: float) -> None:
        if self.stopping_workers:
            if all(s.handle is None for s in self.slots):
                self.finished = True
            return
        if len(self.table) and now < self.drain_deadline:
            return
        self._fail_unfinished("daemon stopped before this task finished; resubmit it")
        self._stop_workers(now)

    def _fail_unfinished(self, why: str) -> None:
        from supervisor.errors import ShuttingDown

        for slot in self.slots:
            self.table.requeue(slot)
        self.table.queue.clear()
        for task in self.table.unfinished():
            self.fail_task(task, ShuttingDown.type, why)
        self.flush_output()

    def _stop_workers(self, now: float) -> None:
        self.stopping_workers = True
        for slot in self.slots:
            if slot.handle is None:
                if slot.state in (S.BACKOFF, S.FATAL, S.EXITED):
                    slot.move(S.STOPPED)
                continue
            if slot.state is not S.STOPPING:
                self._stop_slot(slot, now)

    def _stop_slot(self, slot: Slot, now: float) -> None:
        """SIGTERM the worker's group, SIGKILL it after shutdown.stop_timeout."""
        handle: WorkerHandle = slot.handle
        slot.move(S.STOPPING)
        self.publisher.event("worker.stopping", slot=slot.index, pid=slot.pid,
                             held=len(slot.inflight))
        # Read what is still in the pipe first: results that already
        # arrived must count, or their tasks would run twice.
        if handle.fd in self._handlers:
            self._read_worker(slot)
        # Unwatch before closing: a closed fd's number is soon reused by
        # another worker's pipe, which must stay watched.
        self._unwatch(handle.fd)
        handle.close_pipe()  # a healthy idle worker exits on EOF
        handle.signal_tree(signal.SIGTERM)
        generation = slot.generation
        self.at(now + self.cfg.shutdown.stop_timeout, lambda: self._kill_late(slot, generation))

    def _kill_late(self, slot: Slot, generation: int) -> None:
        if slot.handle is not None and slot.generation == generation:
            log.warning("worker_stop_timeout_sigkill", slot=slot.index, pid=slot.pid)
            slot.handle.signal_tree(signal.SIGKILL)

    def stop_now(self) -> None:
        """Second SIGTERM: no more grace."""
        log.warning("stop_immediately")
        self.draining = True
        self._fail_unfinished("daemon stopped immediately; resubmit this task")
        self.stopping_workers = True
        for slot in self.slots:
            if slot.handle is not None:
                slot.handle.signal_group(signal.SIGKILL)
                if slot.state is not S.STOPPING:
                    slot.move(S.STOPPING)
            elif slot.state in (S.BACKOFF, S.FATAL, S.EXITED):
                slot.move(S.STOPPED)
