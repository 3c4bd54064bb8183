"""Workers die; the pool does not. Real processes, real signals.

Every test here kills, crashes or times out real worker processes of a real
phalanxd and checks what the issue promises: the task that was running is
retried elsewhere or fails with an error naming the exit code or signal,
the slot gets a new worker, nothing is answered twice, and every other
client's work carries on untouched.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import psutil
import pytest

from supervisor.client import TaskError
from tests.conftest import Daemon, StartDaemon, alive, wait_until

ECHO = "workers.builtin:echo"
SLEEP = "workers.builtin:sleep"
CRASH = "workers.testing:crash"


def test_sigkill_mid_task_runs_it_again_elsewhere_exactly_once(daemon: Daemon) -> None:
    """A worker SIGKILLed while running a task: the task is retried on another
    worker and answered once (attempts == 2), published once, and the death
    is published as event.worker.exited naming SIGKILL plus event.task.retried."""
    client = daemon.client()
    sub = daemon.subscribe("result.", "event.task.", "event.worker.", client=client)
    peer = daemon.raw()
    peer.send_msg({"op": "submit", "tasks": [{"task": SLEEP, "id": "victim", "args": [1.0]}]})
    assert peer.recv()["accepted"] == ["victim"]
    slot = daemon.slot_holding("victim")
    os.kill(slot["pid"], signal.SIGKILL)

    result = peer.results_for({"victim"}, timeout=15)["victim"]
    assert result["ok"] is True
    assert result["value"] == 1.0
    assert result["attempts"] == 2

    exited = sub.event("worker.exited", pid=slot["pid"])
    assert "SIGKILL" in exited["exit"]
    assert exited["slot"] == slot["slot"]
    retried = sub.event("task.retried", id="victim")
    assert retried["attempts"] == 1
    assert retried["reason"] == "WorkerCrashed"

    daemon.wait_all_running(not_pids={slot["pid"]})
    stats = daemon.stats()
    assert (stats["queued"], stats["in_flight"]) == (0, 0)
    sub.fence(client)
    published = sub.results("victim")
    assert len(published) == 1, published
    assert published[0]["attempts"] == 2
    # Nothing more for this id reached the client either.
    peer.send_msg({"op": "ping"})
    assert peer.recv()["op"] == "pong"


CRASH_MODES = [
    ("exit", "exit code 13"),
    ("kill", "SIGKILL"),
    ("segv", "SIGSEGV"),
    ("abort", "SIGABRT"),
    ("raise_base", "exit code 7"),
]


@pytest.mark.parametrize(("mode", "named"), CRASH_MODES, ids=[m for m, _ in CRASH_MODES])
def test_each_crash_mode_fails_the_task_naming_the_cause_and_replaces_the_worker(
    daemon: Daemon, mode: str, named: str
) -> None:
    """crash(mode) with max_attempts=1 fails with WorkerCrashed whose message
    names the exit code or signal, and the slot is back to RUNNING on a new
    worker process."""
    before = daemon.slot_pids()
    client = daemon.client()
    with pytest.raises(TaskError) as info:
        client.with_options(max_attempts=1).submit(CRASH, mode).result(timeout=10)
    err = info.value
    assert err.type == "WorkerCrashed"
    assert named in err.message
    assert "attempt 1 of 1" in err.message

    slots = daemon.wait_all_running(timeout=10)
    after = {s["slot"]: s["pid"] for s in slots}
    replaced = [i for i in before if after[i] != before[i]]
    assert len(replaced) == 1, (before, after)
    crashed = slots[replaced[0]]
    assert crashed["restarts"] == 1
    assert named in crashed["last_exit"]
    # The new worker does work.
    assert client.map(ECHO, range(20)) == list(range(20))


def test_poison_task_is_quarantined_while_other_work_succeeds(daemon: Daemon) -> None:
    """A task that kills every worker it runs on uses its default attempts,
    then fails with WorkerCrashed naming the quarantine (event.task.quarantined
    published); 200 echo tasks submitted alongside all succeed."""
    client = daemon.client()
    sub = daemon.subscribe("event.task.", client=client)
    poison = client.submit(CRASH, "kill")
    echoes = [client.submit(ECHO, i) for i in range(200)]

    with pytest.raises(TaskError) as info:
        poison.result(timeout=20)
    assert info.value.type == "WorkerCrashed"
    assert "quarantined" in info.value.message
    assert "attempt 3 of 3" in info.value.message
    assert [f.result(timeout=20) for f in echoes] == list(range(200))

    quarantined = sub.event("task.quarantined", task=CRASH)
    assert quarantined["crashes"] == 3
    assert len(sub.events("task.retried")) == 2
    assert daemon.stats()["quarantined"] == 1
    daemon.wait_all_running()


def kill_idle_worker(d: Daemon, slot: int) -> int:
    """SIGKILL a slot's idle worker by pid: a death no task explains, the
    kind restart intensity is for (a task's crash is charged to the task)."""
    pid = d.wait_all_running()[slot]["pid"]
    os.kill(pid, signal.SIGKILL)
    return int(pid)


def test_restart_intensity_sends_a_crash_looping_slot_to_backoff(
    start_daemon: StartDaemon,
) -> None:
    """Past restart.max_restarts within restart.period a slot whose worker
    keeps dying on its own waits in BACKOFF (event.worker.backoff, status
    BACKOFF) instead of restarting at once; the other slot keeps completing
    tasks meanwhile, and the slot comes back RUNNING after the delay."""
    # A 1 s backoff without jitter (rather than a shorter one) leaves a
    # loaded machine ample time to observe the slot while it waits.
    d = start_daemon(restart={"max_restarts": 1, "period": 60.0,
                              "backoff_initial": 1.0, "backoff_jitter": 0.0})
    client = d.client()
    sub = d.subscribe("event.worker.", client=client)
    kill_idle_worker(d, 0)
    first = sub.event("worker.exited", slot=0)
    sub.event("worker.spawned", slot=0, after=first)  # the first death restarts at once
    kill_idle_worker(d, 0)
    backoff = sub.event("worker.backoff", slot=0, after=first)
    assert backoff["delay"] == pytest.approx(1.0)
    assert backoff["backoffs"] == 1

    states = {s["slot"]: s["state"] for s in d.status()}
    assert states[0] == "BACKOFF", states
    # The other slot serves while this one waits.
    assert client.map(ECHO, range(100)) == list(range(100))
    assert {s["slot"]: s["state"] for s in d.status()}[0] == "BACKOFF"

    restarted = sub.event("worker.started", slot=0, after=backoff)
    assert restarted["time"] - backoff["time"] >= 0.9
    d.wait_all_running()
    assert client.map(ECHO, range(100)) == list(range(100))


def test_deaths_caused_by_tasks_never_send_a_slot_to_backoff(
    start_daemon: StartDaemon,
) -> None:
    """A crashing task pays for its crashes (attempts, quarantine); the slot
    restarts at once however often it happens (issue: poison storms must
    not stall healthy work)."""
    d = start_daemon(restart={"max_restarts": 1, "period": 60.0, "daemon_max_restarts": 2})
    client = d.client()
    sub = d.subscribe("event.", client=client)
    once = client.with_options(max_attempts=1)
    for _ in range(6):
        with pytest.raises(TaskError):
            once.submit(CRASH, "exit").result(timeout=10)
    assert client.map(ECHO, range(50)) == list(range(50))
    d.wait_all_running()
    sub.fence(client)  # every event of the crashes above has arrived
    assert len(sub.events("worker.exited")) == 6
    assert not sub.events("worker.backoff") and not sub.events("supervisor.crash_loop")


def test_slot_goes_fatal_after_max_backoffs_and_retries_after_cooldown(
    start_daemon: StartDaemon,
) -> None:
    """After restart.max_backoffs consecutive backoffs the slot is FATAL
    (event.worker.fatal, status FATAL); work waits instead of being lost,
    and after restart.fatal_cooldown the slot starts again and runs it."""
    d = start_daemon(
        workers={"count": 1},
        restart={"max_restarts": 0, "backoff_initial": 0.2, "backoff_jitter": 0.0,
                 # 3 s: status is read as FATAL after the event arrives, a
                 # margin a loaded machine must not eat up.
                 "max_backoffs": 1, "fatal_cooldown": 3.0},
    )
    client = d.client()
    sub = d.subscribe("event.worker.", client=client)

    kill_idle_worker(d, 0)
    backoff = sub.event("worker.backoff", slot=0)
    d.wait_all_running()
    kill_idle_worker(d, 0)
    fatal = sub.event("worker.fatal", slot=0, after=backoff)
    assert fatal["cooldown"] == pytest.approx(3.0)
    assert d.status()[0]["state"] == "FATAL"

    waiting = client.submit(ECHO, "after the cooldown")
    assert d.status()[0]["state"] == "FATAL"
    assert not waiting.done()
    assert waiting.result(timeout=10) == "after the cooldown"
    started = sub.event("worker.started", slot=0, after=fatal)
    assert started["generation"] == 3
    assert started["time"] - fatal["time"] >= 2.9


def test_second_client_is_unaffected_by_another_clients_crashing_tasks(
    daemon: Daemon,
) -> None:
    """While one client's tasks kill workers, a second client's 500 echo tasks
    all succeed, each answered and published exactly once, none charged an
    attempt (those a dying worker held were handed back uncharged)."""
    crasher = daemon.client()
    sub = daemon.subscribe(f"result.{ECHO}", client=crasher)
    bystander = daemon.client()
    once = crasher.with_options(max_attempts=1)
    crashes = [once.submit(CRASH, mode) for mode in ["kill", "exit", "segv", "abort"] * 2]
    values = [f"b-{i}" for i in range(500)]

    assert bystander.map(ECHO, values) == values

    for fut in crashes:
        with pytest.raises(TaskError) as info:
            fut.result(timeout=20)
        assert info.value.type == "WorkerCrashed"
    daemon.wait_all_running()
    sub.fence(crasher)
    published = [r for r in sub.results() if str(r.get("value")).startswith("b-")]
    counts = Counter(r["value"] for r in published)
    assert set(counts) == set(values)
    assert max(counts.values()) == 1
    assert {r["attempts"] for r in published} == {1}
    assert len({r["id"] for r in published}) == 500


def test_timeout_kills_the_worker_and_fails_the_task(daemon: Daemon) -> None:
    """A task past its per-submit timeout fails with type Timeout long before
    it would have finished (sleep 30, answer within 10 s), and its worker is
    replaced. No upper bound on the time beyond that: a loaded machine may
    take a while to notice and kill, and Timeout is what proves the kill."""
    client = daemon.client()
    before = set(daemon.slot_pids().values())
    start = time.monotonic()
    with pytest.raises(TaskError) as info:
        client.with_options(timeout=0.3).submit(SLEEP, 30).result(timeout=10)
    elapsed = time.monotonic() - start
    assert info.value.type == "Timeout"
    assert "0.3s timeout" in info.value.message
    assert elapsed >= 0.3
    slots = daemon.wait_all_running()
    assert len(before - {s["pid"] for s in slots}) == 1
    assert sum(s["restarts"] for s in slots) == 1


def test_task_that_raises_is_a_failed_result_not_a_crash(daemon: Daemon) -> None:
    """A task raising an exception fails with the exception's class name
    (TaskFailure), its message and traceback; no worker is restarted."""
    client = daemon.client()
    before = daemon.slot_pids()
    with pytest.raises(TaskError) as info:
        client.submit("workers.builtin:fail", "boom").result(timeout=10)
    err = info.value
    assert err.type == "TaskFailure"
    assert err.message == "boom"
    assert err.traceback is not None
    assert "TaskFailure: boom" in err.traceback
    assert "in fail" in err.traceback
    slots = daemon.status()
    assert {s["slot"]: s["pid"] for s in slots} == before
    assert all(s["restarts"] == 0 and s["state"] == "RUNNING" for s in slots)
    assert sum(s["failed"] for s in slots) == 1
    # The same worker goes on serving.
    assert client.submit(ECHO, "still here").result(timeout=10) == "still here"
    assert daemon.slot_pids() == before


def test_no_worker_leaves_a_grandchild_behind_after_a_crash(daemon: Daemon) -> None:
    """A task that started a child (ignoring SIGTERM) and then crashed its
    worker leaves no process behind: the worker's process group is reaped."""
    client = daemon.client()
    grandchild = client.submit("workers.testing:spawn_child", 60).result(timeout=10)
    proc = psutil.Process(grandchild)
    assert proc.is_running()
    pids = set(daemon.slot_pids().values())
    for pid in pids:  # whichever worker started it: kill every worker
        os.kill(pid, signal.SIGKILL)
    daemon.wait_all_running(not_pids=pids)
    wait_until(lambda: not alive(proc), timeout=5,
               message=f"grandchild {grandchild} survived its worker")


def test_crash_inside_a_prefetched_batch_charges_only_the_crashing_task(daemon: Daemon) -> None:
    """When a worker dies partway through a batch it was handed, only the task
    that killed it is charged: the tasks before it (finished, but their
    results died with the worker) and after it run again uncharged, and no
    innocent task is retried or quarantined in its place."""
    client = daemon.client()
    assert client.map(ECHO, range(2000)) == list(range(2000))  # opens the prefetch window
    sub = daemon.subscribe("event.task.", client=client)
    peer = daemon.raw()
    tasks = [{"task": ECHO, "id": f"e{i}", "args": [i]} for i in range(100)]
    tasks.insert(50, {"task": CRASH, "id": "boom", "args": ["kill"], "max_attempts": 1})
    peer.send_msg({"op": "submit", "tasks": tasks})
    assert len(peer.recv()["accepted"]) == 101
    results = peer.results_for({t["id"] for t in tasks}, timeout=15)

    boom = results.pop("boom")
    assert not boom["ok"] and boom["error"]["type"] == "WorkerCrashed"
    assert "SIGKILL" in boom["error"]["message"]
    assert all(r["ok"] and r["attempts"] == 1 for r in results.values()), [
        r for r in results.values() if not r["ok"] or r["attempts"] != 1]
    sub.fence(client)  # a retried event, had there been one, has arrived by now
    assert sub.events("task.retried") == []
    assert daemon.stats()["quarantined"] == 0
