"""The Pool's recovery paths on a fake spawner (tests/fakepool.py): deaths,
deadlines, prefetch, quarantine, restart intensity, resize, in microseconds.

Each test drives the real Pool (supervisor/daemon/pool/) through the moves
a worker makes (hello, start a task, finish tasks, die) and checks what the
Pool decided: which task was charged, what was requeued, what was
delivered, which slot restarted or backed off.
"""

from __future__ import annotations

import signal
from pathlib import Path

from supervisor.core.slots import SlotState
from tests.fakepool import Harness

S = SlotState


def test_death_holding_several_tasks_charges_only_the_running_one(tmp_path: Path) -> None:
    h = Harness(tmp_path, workers={"count": 1, "max_prefetch": 8})
    h.pool.slots[0].service_estimate = 1e-6  # a fast worker: a wide window
    h.submit("a", "b", "c", "d")
    h.turn()
    assert h.held(0) == ["a", "b", "c", "d"]
    h.finish(0, "a")
    h.start(0, "c")  # b's result died with the worker; c was running
    h.die(0)
    h.turn()
    table = h.pool.table
    assert h.ears.results["a"].ok
    charged = table.by_id["c"]
    assert (charged.attempts, charged.crashes) == (1, 1)
    assert table.by_id["b"].attempts == 0 and table.by_id["d"].attempts == 0
    # The charged task first, then the uncharged ones in their order; the
    # replacement starts at once (a death a task caused is the task's).
    assert [t.id for t in table.queue] == ["c", "b", "d"]
    assert h.handle(0) is not h.spawner.handles[0]
    assert h.pool.slots[0].state is S.STARTING
    assert not h.ears.kinds("worker.backoff")


def test_timeout_kills_for_the_running_task_only_and_charges_only_it(tmp_path: Path) -> None:
    """Ten quick tasks then a slow one with a 1 s timeout on one worker:
    the deadline runs from the slow task's own start; it alone fails with
    Timeout; the others were answered and are never charged."""
    h = Harness(tmp_path, workers={"count": 1, "max_prefetch": 16})
    h.pool.slots[0].service_estimate = 1e-6
    quick = [f"q{i}" for i in range(10)]
    h.submit(*quick)
    h.submit("slow", timeout=1.0)
    h.submit("after")  # prefetched behind the slow one, never started
    h.turn()
    assert h.held(0) == [*quick, "slow", "after"]
    h.turn(5.0)  # long after the oldest task was handed over: not a deadline
    assert not h.handle(0).signals
    h.start(0, "slow")
    h.finish(0, *quick)
    h.turn(0.9)
    assert not h.handle(0).signals
    h.turn(0.2)  # 1.1 s after "slow" started
    assert h.handle(0).signals == [signal.SIGKILL]
    h.die(0)
    h.turn()
    assert all(h.ears.results[q].ok for q in quick)
    assert h.ears.error_type("slow") == "Timeout"
    after = h.pool.table.by_id["after"]
    assert after.attempts == 0 and after.crashes == 0


def test_a_task_that_keeps_killing_workers_is_quarantined(tmp_path: Path) -> None:
    h = Harness(tmp_path, workers={"count": 2})
    h.submit("poison", max_attempts=3)
    for attempt in range(3):
        h.turn()
        index = next(s.index for s in h.pool.slots if "poison" in h.held(s.index))
        h.start(index, "poison")
        h.die(index)
        h.turn()
        if attempt < 2:
            h.hello(index)
    assert h.ears.error_type("poison") == "WorkerCrashed"
    assert h.pool.table.quarantined == 1
    (event,) = h.ears.kinds("task.quarantined")
    assert event["crashes"] == 3
    # Three deaths, all the task's doing: no slot backed off.
    assert not h.ears.kinds("worker.backoff")
    assert all(s.state is not S.BACKOFF for s in h.pool.slots)


def test_deaths_no_task_explains_count_against_restart_intensity(tmp_path: Path) -> None:
    h = Harness(tmp_path, workers={"count": 1},
                restart={"max_restarts": 1, "backoff_initial": 0.5, "backoff_jitter": 0.0})
    h.die(0)  # idle: no task explains it
    h.turn()
    assert h.pool.slots[0].state is S.STARTING  # first restart: at once
    h.hello(0)
    h.die(0)
    h.turn()
    slot = h.pool.slots[0]
    assert slot.state is S.BACKOFF
    (backoff,) = h.ears.kinds("worker.backoff")
    assert backoff["delay"] == 0.5
    h.submit("waits")
    h.turn(0.4)
    assert slot.state is S.BACKOFF and h.pool.table.queued == 1
    h.turn(0.2)
    assert slot.state is S.STARTING
    h.hello(0)
    h.turn()
    assert h.held(0) == ["waits"]


def test_shrink_then_grow_keeps_slot_indices_unique(tmp_path: Path) -> None:
    h = Harness(tmp_path, workers={"count": 4})
    h.submit("busy")
    h.turn()
    busy = next(s.index for s in h.pool.slots if h.held(s.index))
    h.pool.resize(2)
    h.turn()
    h.pool.resize(4)
    h.turn()
    indices = [s.index for s in h.pool.slots]
    assert len(indices) == len(set(indices)) == 4, indices
    assert busy in indices
    assert h.held(busy) == ["busy"]


def test_results_written_before_death_count_and_are_not_rerun(tmp_path: Path) -> None:
    h = Harness(tmp_path, workers={"count": 1, "max_prefetch": 4})
    h.pool.slots[0].service_estimate = 1e-6
    h.submit("a", "b")
    h.turn()
    handle = h.handle(0)
    keys = {w.key for w in handle.sent}
    # The worker wrote a's result, then died before the loop read it.
    import msgspec

    from supervisor.protocol import Batch, Done, encoder
    a_key = min(keys)
    handle.inbox.append(encoder.encode(Batch([Done(a_key, True, msgspec.Raw(b"\x01"))])))
    handle.running_key = max(keys)
    h.die(0)
    h.turn()
    assert h.ears.results["a"].ok
    assert "a" not in {t.id for t in h.pool.table.queue}
    assert h.pool.table.by_id["b"].attempts == 1
