"""The fleet client's routing decisions (pure: no sockets, no clock)."""

from __future__ import annotations

import pytest

from supervisor.client.router import Router

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


def router(*eps: str) -> Router:
    return Router(eps or (A, B), heartbeat=1.0, dead_after=3.0)


def test_a_daemon_that_never_answered_gets_nothing() -> None:
    r = router()
    assert r.assign(["t1"]) == {}
    r.on_pong(A, 0.0, "bootA", capacity=2, held=0)
    assert r.assign(["t1", "t2", "t3"]) == {A: ["t1", "t2"]}


def test_busy_daemon_gets_nothing_while_an_idle_one_has_credit() -> None:
    r = router()
    r.on_pong(A, 0.0, "bootA", capacity=3, held=10)  # other clients filled it
    r.on_pong(B, 0.0, "bootB", capacity=3, held=0)
    plan = r.assign([f"t{i}" for i in range(5)])
    assert plan == {B: ["t0", "t1", "t2"]}
    assert r.credit() == 0


def test_work_spreads_by_free_capacity() -> None:
    r = router(A, B)
    r.on_pong(A, 0.0, "a", capacity=3, held=0)
    r.on_pong(B, 0.0, "b", capacity=9, held=0)
    plan = r.assign([f"t{i}" for i in range(12)])
    assert len(plan[A]) == 3 and len(plan[B]) == 9


def test_a_result_gives_the_credit_back() -> None:
    r = router(A)
    r.on_pong(A, 0.0, "a", capacity=1, held=0)
    assert r.assign(["t1", "t2"]) == {A: ["t1"]}
    assert r.assign(["t2"]) == {}
    r.on_result("t1")
    assert r.assign(["t2"]) == {A: ["t2"]}


def test_own_tasks_in_a_pong_are_not_counted_twice() -> None:
    r = router(A)
    r.on_pong(A, 0.0, "a", capacity=4, held=0)
    r.assign(["t1", "t2"])
    r.on_pong(A, 0.5, "a", capacity=4, held=3)  # our 2 and one of someone else
    assert r.peers[A].others == 1
    assert r.credit() == 1


def test_a_silent_daemon_dies_and_hands_back_its_tasks_in_order() -> None:
    r = router()
    r.on_pong(A, 0.0, "a", capacity=3, held=0)
    r.on_pong(B, 0.0, "b", capacity=0, held=0)
    assert r.assign(["t1", "t2", "t3"]) == {A: ["t1", "t2", "t3"]}
    r.heard(B, 2.5)
    assert r.expire(3.0) == ([], [])  # not yet: silent for exactly dead_after
    dead, back = r.expire(3.01)
    assert dead == [A] and back == ["t1", "t2", "t3"]
    assert r.holder("t1") is None and r.moved == 3
    assert r.peers[A].credit == 0
    r.on_pong(B, 3.1, "b", capacity=3, held=0)
    assert r.assign(back) == {B: ["t1", "t2", "t3"]}


def test_a_daemon_that_comes_back_gets_work_again() -> None:
    r = router(A)
    r.on_pong(A, 0.0, "a", capacity=2, held=0)
    r.expire(10.0)
    assert r.assign(["t1"]) == {}
    assert r.on_pong(A, 11.0, "a2", capacity=2, held=0) == []  # nothing left to hand back
    assert r.assign(["t1"]) == {A: ["t1"]}


def test_a_restarted_daemon_hands_back_what_it_forgot() -> None:
    r = router(A)
    r.on_pong(A, 0.0, "a", capacity=2, held=0)
    r.assign(["t1", "t2"])
    r.on_result("t1")
    assert r.on_pong(A, 0.5, "a-new-boot", capacity=2, held=0) == ["t2"]
    assert r.credit() == 2


def test_a_late_result_from_the_old_holder_frees_the_new_one() -> None:
    r = router()
    r.on_pong(A, 0.0, "a", capacity=1, held=0)
    r.on_pong(B, 0.0, "b", capacity=1, held=0)
    r.heard(B, 3.0)
    first = r.assign(["t1"])
    ep = next(iter(first))
    other = B if ep == A else A
    r.peers[other].heard = 5.0
    r.expire(5.0)
    r.assign(["t1"])
    assert r.holder("t1") == other
    r.on_result("t1")  # whoever answered, the task is settled
    assert r.holder("t1") is None and r.peers[other].credit == 1


def test_pings_are_due_every_heartbeat_per_daemon() -> None:
    r = router()
    assert sorted(r.pings_due(0.0)) == [A, B]
    assert r.pings_due(0.5) == []
    assert sorted(r.pings_due(1.0)) == [A, B]
    assert r.next_deadline(1.0) == 2.0


def test_bad_timing_is_refused() -> None:
    with pytest.raises(ValueError):
        Router([A], heartbeat=1.0, dead_after=1.0)
    with pytest.raises(ValueError):
        Router([], heartbeat=1.0, dead_after=2.0)


def test_a_stalled_daemon_has_no_credit_until_it_answers_again() -> None:
    r = router(A)
    r.on_pong(A, 0.0, "a", capacity=2, held=0)
    r.stall(A)
    assert r.assign(["t1"]) == {}
    r.on_pong(A, 0.1, "a", capacity=2, held=0)
    assert r.assign(["t1"]) == {A: ["t1"]}
