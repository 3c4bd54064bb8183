"""Changes to the pool's shape: resize, recycle, operator start/stop, the end.

Every change keeps the one rule: no accepted task is dropped. Slots that
must go (shrink) or be renewed (reload, allowlist change, recycling) are
marked and handled by ``maintain`` once they hold no task, never more than
one slot in transition at a time.
"""

from __future__ import annotations

import signal

import structlog

from supervisor.core.slots import Slot, SlotState
from supervisor.daemon.pool.state import PoolState, WorkerSlot
from supervisor.daemon.pool.workers import WorkerIO

log = structlog.get_logger("phalanxd")
S = SlotState


class Maintenance:
    def __init__(self, state: PoolState, io: WorkerIO) -> None:
        self.s = state
        self.io = io

    def resize(self, target: int) -> None:
        s = self.s
        active = [x for x in s.slots if not x.retire]
        for slot in s.slots:  # growing again: keep slots still on their way out
            if slot.retire and len(active) < target:
                slot.retire = False
                active.append(slot)
        while len(active) < target:
            new: WorkerSlot = Slot(s.new_index(), max_window=s.cfg.workers.max_prefetch)
            s.slots.append(new)
            active.append(new)
            self.io.start(new)
        for slot in sorted(active, key=lambda x: x.index)[target:]:
            slot.retire = True
            s.maintenance = True

    def recycle_all(self) -> None:
        """Rolling restart: every slot gets a fresh worker running the task
        code as it is now (the spawner renews its forkserver)."""
        self.s.spawner.renew(self.s.allow)
        for slot in self.s.slots:
            if not slot.retire:
                slot.recycle = True
        self.s.maintenance = True

    def stop_slot(self, slot: WorkerSlot, now: float) -> None:
        """Operator stop: the slot stays STOPPED; its tasks go to the others."""
        slot.recycle = False
        if slot.handle is not None:
            if slot.state is not S.STOPPING:
                self.terminate(slot, now)
        elif slot.state in (S.BACKOFF, S.FATAL, S.EXITED):
            slot.move(S.STOPPED)

    def start_slot(self, slot: WorkerSlot) -> None:
        if slot.state in (S.STOPPED, S.BACKOFF, S.FATAL):
            slot.backoffs = 0
            slot.restarts.clear()
            self.io.start(slot)

    def restart_slot(self, slot: WorkerSlot, now: float) -> None:
        if slot.handle is None:
            self.start_slot(slot)
            return
        slot.recycle = True
        if slot.state is not S.STOPPING:
            self.terminate(slot, now)

    def maintain(self, now: float) -> None:
        """Carry out retire/recycle intentions, never more than one slot down."""
        s = self.s
        pending = False
        for slot in list(s.slots):
            if not (slot.retire or slot.recycle):
                continue
            pending = True
            if slot.handle is None:  # BACKOFF, FATAL or STOPPED: nothing to stop
                if slot.retire and slot.state is not S.STARTING:
                    if slot.state is not S.STOPPED:
                        slot.move(S.STOPPED)
                    s.slots.remove(slot)
                    s.events.event("worker.removed", slot=slot.index)
                elif slot.recycle:
                    slot.recycle = False
                continue
            if slot.state is not S.RUNNING or slot.inflight:
                continue  # let it finish what it holds
            if slot.recycle and not slot.retire:
                # One worker in transition at a time (a slot parked in
                # BACKOFF/FATAL/STOPPED does not hold the others back).
                others_down = any(
                    x is not slot and not x.retire and x.state in (S.STARTING, S.STOPPING)
                    for x in s.slots
                )
                if others_down:
                    continue
            self.terminate(slot, now)
        s.maintenance = pending and bool(s.slots)

    def terminate(self, slot: WorkerSlot, now: float) -> None:
        """SIGTERM the worker's group, SIGKILL it after shutdown.stop_timeout."""
        s = self.s
        handle = slot.handle
        assert handle is not None, "terminate() needs a live worker"
        slot.move(S.STOPPING)
        s.events.event("worker.stopping", slot=slot.index, pid=slot.pid, held=len(slot.inflight))
        # Read what is still in the pipe first: results that already
        # arrived must count, or their tasks would run twice.
        if s.loop.watching(handle.fd):
            self.io.read(slot)
        # Unwatch before closing: a closed fd's number is soon reused by
        # another worker's pipe, which must stay watched.
        s.loop.unwatch(handle.fd)
        handle.close_pipe()  # a healthy idle worker exits on EOF
        handle.signal_tree(signal.SIGTERM)
        generation = slot.generation
        s.loop.at(now + s.cfg.shutdown.stop_timeout, lambda: self._kill_late(slot, generation))

    def _kill_late(self, slot: WorkerSlot, generation: int) -> None:
        if slot.handle is not None and slot.generation == generation:
            log.warning("worker_stop_timeout_sigkill", slot=slot.index, pid=slot.pid)
            slot.handle.signal_tree(signal.SIGKILL)

    def fail_unfinished(self, type_: str, why: str) -> None:
        table = self.s.table
        for slot in self.s.slots:
            table.requeue(slot)
        table.queue.clear()
        for task in table.unfinished():
            self.io.fail(task, type_, why)

    def stop_all(self, now: float) -> None:
        """Stop every worker for good (SIGTERM, then SIGKILL)."""
        self.s.stopping = True
        for slot in self.s.slots:
            if slot.handle is None:
                if slot.state in (S.BACKOFF, S.FATAL, S.EXITED):
                    slot.move(S.STOPPED)
                continue
            if slot.state is not S.STOPPING:
                self.terminate(slot, now)

    def kill_all(self) -> None:
        """No more grace: SIGKILL every worker's tree now."""
        self.s.stopping = True
        for slot in self.s.slots:
            if slot.handle is not None:
                slot.handle.signal_tree(signal.SIGKILL)
                if slot.state is not S.STOPPING:
                    slot.move(S.STOPPING)
            elif slot.state in (S.BACKOFF, S.FATAL, S.EXITED):
                slot.move(S.STOPPED)
