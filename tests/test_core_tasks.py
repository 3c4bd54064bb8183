"""Pure unit tests for the task table and the dispatch plan (supervisor/core/tasks.py).

No processes, no sockets: slots are plain ``Slot`` objects put in the state
the test needs, tasks are built directly.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import pytest

from supervisor.core.policy import judge
from supervisor.core.slots import Slot, SlotState
from supervisor.core.tasks import ReplyGroup, Task, TaskTable, plan
from supervisor.protocol import NO_ARGS, NO_KWARGS, Result

# A service estimate this small opens the prefetch window all the way to
# max_window, so ``free`` is limited only by what the slot already holds.
FAST = 1e-9


def make_task(table: TaskTable, id: str | None = None, max_attempts: int = 3) -> Task:
    key = table.next_key()
    return Task(
        key=key,
        id=id if id is not None else f"t{key}",
        name="workers.builtin:echo",
        args=NO_ARGS,
        kwargs=NO_KWARGS,
        route=b"client",
        max_attempts=max_attempts,
        timeout=0.0,
    )


def fill(table: TaskTable, n: int, max_attempts: int = 3) -> list[Task]:
    tasks = [make_task(table, max_attempts=max_attempts) for _ in range(n)]
    for task in tasks:
        table.add(task)
    return tasks


def running_slot(index: int = 0, max_window: int = 256, fast: bool = True) -> Slot:
    slot = Slot(index, max_window=max_window, state=SlotState.RUNNING)
    if fast:
        slot.service_estimate = FAST
    return slot


def ids(tasks: Iterable[Task]) -> list[str]:
    return [t.id for t in tasks]


# ------------------------------------------------------------- add / assign


def test_add_indexes_task_by_key_and_id_and_queues_it() -> None:
    table = TaskTable()
    task = make_task(table, id="abc")
    table.add(task)
    assert table.by_key[task.key] is task
    assert table.by_id["abc"] is task
    assert list(table.queue) == [task]
    assert len(table) == 1
    assert table.queued == 1
    assert table.accepted == 1


def test_next_key_is_unique_and_increasing() -> None:
    table = TaskTable()
    keys = [table.next_key() for _ in range(5)]
    assert keys == sorted(set(keys))


def test_assign_moves_tasks_from_queue_front_to_slot_inflight_in_order() -> None:
    table = TaskTable()
    tasks = fill(table, 5)
    slot = running_slot(3)
    taken = table.assign(slot, 3)
    assert taken == tasks[:3]
    assert list(slot.inflight) == tasks[:3]
    assert list(table.queue) == tasks[3:]
    assert all(t.slot == 3 for t in taken)
    assert all(t.slot is None for t in tasks[3:])
    # Assigned tasks are still unfinished: the table keeps them.
    assert len(table) == 5


def test_assign_takes_no_more_than_is_queued() -> None:
    table = TaskTable()
    tasks = fill(table, 2)
    slot = running_slot()
    assert table.assign(slot, 10) == tasks
    assert table.queued == 0
    assert table.assign(slot, 10) == []


def test_assign_appends_behind_what_the_slot_already_holds() -> None:
    table = TaskTable()
    tasks = fill(table, 4)
    slot = running_slot()
    table.assign(slot, 2)
    table.assign(slot, 2)
    assert list(slot.inflight) == tasks


# ------------------------------------------------------------------ finish


def res(tag: str, size: int = 0) -> Result:
    """A result whose value tells it apart (and weighs ``size`` bytes more)."""
    return Result(tag, "m:f", True, 1, value=msgspec.msgpack.encode(tag + "x" * size))


def test_finish_forgets_task_and_counts_success_or_failure() -> None:
    table = TaskTable()
    ok_task, bad_task = fill(table, 2)
    table.finish(ok_task, True, res("r1"))
    table.finish(bad_task, False, res("r2"))
    assert len(table) == 0
    assert table.by_id == {}
    assert (table.succeeded, table.failed) == (1, 1)


def test_finish_remembers_result_by_id_for_idempotent_resubmit() -> None:
    table = TaskTable()
    (task,) = fill(table, 1)
    table.finish(task, True, res("answer"))
    assert table.cached_result(task.id) == res("answer")
    assert table.cached_result("never-seen") is None


def test_finish_without_result_caches_nothing() -> None:
    table = TaskTable()
    (task,) = fill(table, 1)
    table.finish(task, False)
    assert table.cached_result(task.id) is None


def test_finish_leaves_by_id_alone_when_id_now_belongs_to_another_task() -> None:
    """Only the task that owns an id in ``by_id`` removes that entry."""
    table = TaskTable()
    first = make_task(table, id="same")
    table.add(first)
    second = make_task(table, id="same")
    table.add(second)  # a later task took the id over
    table.finish(first, True)
    assert table.by_id["same"] is second
    assert second.key in table.by_key
    table.finish(second, True)
    assert "same" not in table.by_id


def test_result_cache_is_bounded_and_evicts_oldest_first() -> None:
    table = TaskTable(result_cache=3)
    tasks = fill(table, 5)
    for i, task in enumerate(tasks):
        table.finish(task, True, res(f"r{i}"))
    assert table.cached_result(tasks[0].id) is None
    assert table.cached_result(tasks[1].id) is None
    assert [table.cached_result(t.id) for t in tasks[2:]] == [res("r2"), res("r3"), res("r4")]
    assert len(table._cache) == 3


def test_result_cache_is_bounded_by_bytes_too() -> None:
    """40 results of 1 MB each never pin more than the byte bound."""
    table = TaskTable(result_cache=1000, cache_bytes=5_000_000)
    tasks = fill(table, 40)
    for i, task in enumerate(tasks):
        table.finish(task, True, res(f"r{i}", 1_000_000))
    assert table.cache_bytes <= 5_000_000
    kept = [t for t in tasks if table.cached_result(t.id) is not None]
    assert kept == tasks[-len(kept):] and 3 <= len(kept) <= 5  # the newest stay


def test_result_cache_of_zero_remembers_nothing() -> None:
    table = TaskTable(result_cache=0)
    (task,) = fill(table, 1)
    table.finish(task, True, res("r"))
    assert table.cached_result(task.id) is None


# -------------------------------------------------------------------- plan


def test_plan_splits_ten_tasks_five_and_five_over_two_idle_slots() -> None:
    a, b = running_slot(0), running_slot(1)
    assert plan(10, [a, b]) == [(a, 5), (b, 5)]


def test_plan_gives_odd_remainder_to_first_slot_and_never_more_than_queued() -> None:
    a, b = running_slot(0), running_slot(1)
    assert plan(3, [a, b]) == [(a, 2), (b, 1)]
    assert plan(1, [a, b]) == [(a, 1)]


def test_plan_respects_each_slot_free_window() -> None:
    table = TaskTable()
    a = running_slot(0, max_window=4)
    b = running_slot(1, max_window=4)
    fill(table, 3)
    table.assign(a, 3)  # a holds 3 of its 4
    assert (a.free, b.free) == (1, 4)
    assert plan(100, [a, b]) == [(a, 1), (b, 4)]


def test_plan_with_fresh_slots_sends_one_task_each() -> None:
    """A new slot's window starts at 1: one task until it proves fast."""
    a, b = running_slot(0, fast=False), running_slot(1, fast=False)
    assert plan(10, [a, b]) == [(a, 1), (b, 1)]


@pytest.mark.parametrize("state", [s for s in SlotState if s is not SlotState.RUNNING])
def test_plan_gives_nothing_to_slots_that_are_not_running(state: SlotState) -> None:
    idle = Slot(0, state=state, service_estimate=FAST)
    ready = running_slot(1)
    assert plan(10, [idle]) == []
    assert plan(10, [idle, ready]) == [(ready, 10)]


def test_plan_is_empty_when_queue_is_empty_or_no_slot_is_free() -> None:
    assert plan(0, [running_slot()]) == []
    assert plan(5, []) == []
    full = running_slot(max_window=1)
    full.inflight.append(object())  # type: ignore[arg-type]
    assert plan(5, [full]) == []


def test_plan_and_assign_together_hand_out_every_task_exactly_once() -> None:
    table = TaskTable()
    tasks = fill(table, 10)
    slots = [running_slot(i) for i in range(3)]
    for slot, n in plan(table.queued, slots):
        table.assign(slot, n)
    handed = [t for s in slots for t in s.inflight]
    assert sorted(ids(handed)) == sorted(ids(tasks))
    assert table.queued == 0


# ------------------------------------------------------- crash accounting


def test_charge_death_charges_only_oldest_and_requeues_rest_at_front_in_order() -> None:
    table = TaskTable()
    held = fill(table, 4)
    waiting = fill(table, 2)
    slot = running_slot()
    table.assign(slot, 4)

    charged = table.charge_death(slot)
    assert charged is held[0]
    assert judge(charged, False, "died").action == "retry"
    table.retry(charged)

    assert held[0].attempts == 1 and held[0].crashes == 1
    assert all(t.attempts == 0 and t.crashes == 0 for t in held[1:])
    # The charged task retries first, then the uncharged ones in their
    # original order, then whatever was already waiting.
    assert list(table.queue) == [*held, *waiting]
    assert all(t.slot is None for t in held)
    assert len(slot.inflight) == 0
    assert table.retried == 1
    assert len(table) == 6


def test_charge_death_with_attempts_used_up_returns_no_retry_and_does_not_requeue() -> None:
    table = TaskTable()
    doomed = make_task(table, max_attempts=1)
    table.add(doomed)
    others = fill(table, 2)
    slot = running_slot()
    table.assign(slot, 3)

    charged = table.charge_death(slot)

    assert charged is doomed
    assert judge(doomed, False, "died").action == "fail"
    assert doomed.attempts == 1
    assert doomed not in table.queue
    assert list(table.queue) == others
    assert all(t.attempts == 0 for t in others)
    assert table.retried == 0
    # The caller publishes its failure; until then the table still holds it.
    assert table.by_key[doomed.key] is doomed


def test_charge_death_retries_until_max_attempts_then_gives_up() -> None:
    table = TaskTable()
    (task,) = fill(table, 1, max_attempts=3)
    slot = running_slot()
    outcomes = []
    for _ in range(3):
        table.assign(slot, 1)
        charged = table.charge_death(slot)
        assert charged is task
        verdict = judge(task, False, "died")
        if verdict.action == "retry":
            table.retry(task)
        outcomes.append(verdict.action)
    # It killed three workers: its failure names the quarantine.
    assert outcomes == ["retry", "retry", "quarantine"]
    assert task.attempts == 3 and task.crashes == 3
    assert table.queued == 0


def test_charge_death_of_slot_holding_nothing_returns_none() -> None:
    table = TaskTable()
    queued = fill(table, 2)
    slot = running_slot()
    assert table.charge_death(slot) is None
    assert list(table.queue) == queued


def test_task_answered_before_death_is_never_run_again() -> None:
    """Results that arrived are popped from inflight; a death later leaves them alone."""
    table = TaskTable()
    first, second = fill(table, 2)
    slot = running_slot()
    table.assign(slot, 2)
    answered = slot.inflight.popleft()  # what the daemon does on a result
    table.finish(answered, True, Result(answered.id, answered.name, True))
    charged = table.charge_death(slot)
    assert charged is second
    table.retry(charged)
    assert first not in table.queue
    assert list(table.queue) == [second]


# ------------------------------------------------------------------ requeue


def test_requeue_returns_all_held_tasks_to_front_uncharged_in_order() -> None:
    table = TaskTable()
    held = fill(table, 3)
    waiting = fill(table, 2)
    slot = running_slot()
    table.assign(slot, 3)
    assert table.requeue(slot) == 3
    assert list(table.queue) == [*held, *waiting]
    assert all(t.attempts == 0 and t.crashes == 0 and t.slot is None for t in held)
    assert len(slot.inflight) == 0
    assert table.retried == 0


def test_requeue_of_empty_slot_is_a_no_op() -> None:
    table = TaskTable()
    assert table.requeue(running_slot()) == 0
    assert table.queued == 0


# --------------------------------------------------------------- bookkeeping


def test_drop_route_forgets_only_that_submitters_route() -> None:
    table = TaskTable()
    a, b = fill(table, 2)
    b.route = b"other"
    table.drop_route(b"client")
    assert a.route is None
    assert b.route == b"other"


def test_unfinished_lists_every_task_not_yet_finished_as_a_snapshot() -> None:
    table = TaskTable()
    tasks = fill(table, 3)
    table.assign(running_slot(), 1)
    snapshot = table.unfinished()
    table.finish(tasks[0], True)  # must not disturb the snapshot
    assert set(ids(snapshot)) == set(ids(tasks))
    assert set(ids(table.unfinished())) == set(ids(tasks[1:]))


def test_reply_group_starts_empty() -> None:
    group = ReplyGroup(b"req")
    assert (group.route, group.results, group.waiting) == (b"req", [], 0)


def test_task_payloads_are_kept_as_the_raw_bytes_given() -> None:
    table = TaskTable()
    args = msgspec.Raw(b"\x92\x01\x02")
    task = Task(1, "x", "m:f", args, NO_KWARGS, None, 3, 0.0)
    table.add(task)
    assert bytes(table.by_id["x"].args) == b"\x92\x01\x02"


def test_resize_cache_shrinks_by_evicting_oldest_and_bounds_later_results() -> None:
    table = TaskTable(result_cache=5)
    tasks = fill(table, 6)
    for i, task in enumerate(tasks[:5]):
        table.finish(task, True, res(f"r{i}"))
    table.resize_cache(2)
    assert [table.cached_result(t.id) for t in tasks[:5]] == [None, None, None, res("r3"), res("r4")]
    table.finish(tasks[5], True, res("r5"))
    assert [table.cached_result(t.id) for t in tasks[3:]] == [None, res("r4"), res("r5")]
