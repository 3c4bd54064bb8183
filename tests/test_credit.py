"""The credit a daemon advertises (pure: real Slot, TaskTable and Config)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgspec

from supervisor import config
from supervisor.core.slots import Slot, SlotState
from supervisor.core.tasks import Task, TaskTable
from supervisor.daemon.credit import CREDIT_HOLD, advertised


@dataclass
class State:
    """The fields of the Daemon (and its Pool) that credit reads."""

    slots: list[Slot]
    table: TaskTable = field(default_factory=TaskTable)
    cfg: config.Config = field(default_factory=lambda: config.parse({}))
    draining: bool = False
    paused: bool = False

    @property
    def pool(self) -> State:
        return self


def running(n: int) -> list[Slot]:
    slots = [Slot(i) for i in range(n)]
    for s in slots:
        s.state = SlotState.RUNNING
    return slots


def hold(state: State, n: int) -> None:
    for _ in range(n):
        key = state.table.next_key()
        state.table.add(Task(key, f"t{key}", "m:f", msgspec.Raw(b"\x90"),
                             msgspec.Raw(b"\x80"), None, 3, 0.0))


def test_a_fresh_daemon_offers_each_worker_plus_the_floor() -> None:
    s = State(running(2))
    assert advertised(s) == (6, 6, 0)  # 2 x (1 + credit_prefetch 2)
    hold(s, 4)
    assert advertised(s) == (2, 6, 4)
    hold(s, 10)
    assert advertised(s) == (0, 6, 14)  # never negative


def test_workers_that_are_not_running_offer_nothing() -> None:
    s = State(running(3))
    s.slots[1].state = SlotState.BACKOFF
    assert advertised(s)[1] == 6


def test_fast_tasks_raise_credit_to_about_credit_hold_of_work_capped() -> None:
    s = State(running(1))
    s.slots[0].tasks_done = 100
    s.slots[0].service_estimate = CREDIT_HOLD / 50  # 50 tasks per CREDIT_HOLD
    assert advertised(s)[1] == 51
    s.slots[0].service_estimate = 1e-9
    assert advertised(s)[1] == 1 + s.cfg.workers.max_prefetch


def test_a_worker_stuck_on_a_long_task_offers_only_the_floor() -> None:
    s = State(running(1))
    hold(s, 1)
    slot = s.slots[0]
    slot.tasks_done = 100
    slot.service_estimate = 1e-5
    slot.inflight.append(next(iter(s.table.by_key.values())))
    slot.head_since = time.monotonic() - 10 * CREDIT_HOLD
    assert advertised(s) == (2, 3, 1)


def test_paused_or_draining_offers_nothing() -> None:
    s = State(running(2), paused=True)
    assert advertised(s)[:2] == (0, 0)
    s = State(running(2), draining=True)
    assert advertised(s)[:2] == (0, 0)
