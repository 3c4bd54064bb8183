"""Promises under hostile and mixed work, on a real phalanxd.

Each test reproduces an attack or a demanding user's pattern and checks
what the daemon promises: bounded replies, one task per id, healthy work
unharmed by poison, unique slot indices, results delivered at exit, no
process left behind.
"""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from supervisor.client import TaskError
from tests.attack import ECHO, Peer
from tests.conftest import Daemon, StartDaemon, alive, wait_until
from tests.test_ctl import rewrite_config

CRASH = "workers.testing:crash"
ALLOC = "workers.testing:alloc"


def test_repeating_a_finished_id_in_one_request_gets_one_result(daemon: Daemon) -> None:
    """A 4 MB result asked for 200 times in one small request, and again
    from the same peer: one reply each, never 200 copies (no amplification)."""
    peer = Peer(daemon.intake)
    try:
        peer.submit([{"task": ALLOC, "id": "big", "args": [4]}])
        peer.wait(lambda: peer.results["big"] == 1, 20, "the 4 MB result")
        peer.submit([{"task": ALLOC, "id": "big", "args": [4]}] * 200)
        peer.submit([{"task": ALLOC, "id": "big", "args": [4]}] * 200)
        peer.wait(lambda: peer.acks >= 3, 10, "the acks")
        peer.wait(lambda: peer.results["big"] >= 3, 10, "the replays")
        assert not peer.pump(0.3)  # nothing more is coming
        assert peer.results["big"] == 3, peer.results
    finally:
        peer.close()


def test_repeated_attaches_to_a_pending_id_collapse_per_peer(daemon: Daemon) -> None:
    peer = Peer(daemon.intake)
    try:
        peer.submit([{"task": "workers.builtin:sleep", "id": "slow", "args": [0.5]}] * 300)
        for _ in range(5):
            peer.submit([{"task": "workers.builtin:sleep", "id": "slow", "args": [0.5]}])
        peer.wait(lambda: peer.results["slow"] >= 1, 10, "the result")
        assert not peer.pump(0.3)
        assert peer.results["slow"] == 1
    finally:
        peer.close()


def test_an_id_is_one_task_another_task_under_it_is_refused(daemon: Daemon) -> None:
    peer = Peer(daemon.intake)
    try:
        peer.submit([{"task": ECHO, "id": "mine", "args": [1]}])
        peer.wait(lambda: peer.results["mine"] == 1, 10, "first result")
        peer.request({"op": "submit", "tasks": [{"task": ECHO, "id": "mine", "args": [2]}]})
        assert peer.rejected[-1]["error"]["type"] == "IdConflict", peer.rejected
        peer.request({"op": "submit", "tasks": [{"task": ECHO, "id": "mine", "args": [1]}]})
        assert peer.accepted[-1] == "mine"
        peer.wait(lambda: peer.results["mine"] == 2, 10, "the replay")
        assert peer.last["mine"]["value"] == 1
        peer.request({"op": "submit", "tasks": [{"task": ECHO, "id": "x" * 300, "args": [1]}]})
        assert peer.rejected[-1]["error"]["type"] == "BadRequest", peer.rejected
        # An id the daemon chose (none was sent) is checked the same way.
        peer.request({"op": "submit", "tasks": [{"task": ECHO, "args": [5]}]})
        chosen = peer.accepted[-1]
        peer.wait(lambda: peer.results[chosen] == 1, 10, "the id-less task's result")
        peer.request({"op": "submit", "tasks": [{"task": ECHO, "id": chosen, "args": [6]}]})
        assert peer.rejected[-1]["error"]["type"] == "IdConflict", peer.rejected
    finally:
        peer.close()


def test_result_cache_is_bounded_by_bytes(start_daemon: StartDaemon) -> None:
    """40 results of 3 MB each with a 16 MB cache bound: the daemon does not
    keep them all (its RSS stays far below 120 MB of results)."""
    d = start_daemon(tasks={"result_cache_bytes": 16 * 1024 * 1024})
    peer = Peer(d.intake)
    try:
        peer.submit([{"task": ALLOC, "id": f"r{i}", "args": [3]} for i in range(40)])
        peer.wait(lambda: len(peer.results) == 40, 60, "40 results")
        rss = psutil.Process(d.pid).memory_info().rss
        assert rss < 100 * 1024 * 1024, f"daemon RSS {rss >> 20} MiB holds the results"
        # The newest are still answered from the cache, the oldest are gone.
        peer.request({"op": "submit", "tasks": [{"task": ALLOC, "id": "r39", "args": [3]}]})
        assert peer.accepted[-1] == "r39"
        peer.wait(lambda: peer.results["r39"] == 2, 10, "r39 from the cache")
    finally:
        peer.close()


@pytest.mark.slow
def test_poison_storm_never_stalls_healthy_work(start_daemon: StartDaemon) -> None:
    """40 crash("kill") tasks among 5,000 echoes on 2 workers: every healthy
    task succeeds, every poison task ends WorkerCrashed, no slot backs off."""
    d = start_daemon()
    client = d.client()
    sub = d.subscribe("event.worker.", client=client)
    futures = []
    for i in range(5000):
        if i % 125 == 0:
            futures.append(("poison", client.submit(CRASH, "kill")))
        futures.append(("ok", client.submit(ECHO, i)))
    healthy = poison = 0
    for kind, fut in futures:
        if kind == "ok":
            fut.result(timeout=120)
            healthy += 1
        else:
            with pytest.raises(TaskError) as err:
                fut.result(timeout=120)
            assert err.value.type == "WorkerCrashed"
            poison += 1
    assert (healthy, poison) == (5000, 40)
    sub.fence(client)
    assert not sub.events("worker.backoff") and not sub.events("worker.fatal")


def test_shrink_while_busy_then_grow_keeps_indices_unique(start_daemon: StartDaemon) -> None:
    """3 -> 1 while slot 2 is busy (slot 1 goes at once, slot 2 once done),
    then back to 3 before slot 2 finished: every index stays unique, and
    control commands and output reach the right worker."""
    d = start_daemon(workers={"count": 3})
    client = d.client()
    # A fair split hands one task to each slot, in slot order.
    quick = [client.submit("workers.builtin:sleep", 0.2) for _ in range(2)]
    slow = client.submit("workers.builtin:sleep", 2.0)
    for f in quick:
        assert f.result(timeout=10) == 0.2
    wait_until(lambda: [s["slot"] for s in d.status() if s["current"]] == [2], 10,
               message="only slot 2 busy")
    rewrite_config(d, workers={"count": 1})
    d.call("update")
    wait_until(lambda: [s["slot"] for s in d.status()] == [0, 2], 10, message="slot 1 removed")
    rewrite_config(d, workers={"count": 3})
    d.call("update")
    assert slow.result(timeout=10) == 2.0
    slots = d.wait_all_running()
    indices = sorted(s["slot"] for s in slots)
    assert indices == [0, 1, 2], slots
    pids = {s["slot"]: s["pid"] for s in slots}
    assert len(set(pids.values())) == 3
    assert d.call("pid", {"slots": [1]})[0]["pid"] == pids[1]


def test_sigterm_ends_with_no_process_left_even_an_escaped_grandchild(
    start_daemon: StartDaemon,
) -> None:
    """A task starts a setsid child that ignores SIGTERM and leaves it; SIGTERM
    must still end phalanxd within grace + stop_timeout + 1 s, nothing left."""
    d = start_daemon(shutdown={"grace": 1.0, "stop_timeout": 1.0})
    client = d.client()
    child = psutil.Process(client.submit("workers.testing:spawn_child", 60, True).result(timeout=10))
    assert alive(child)
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=10) == 0
    assert time.monotonic() - started < 1.0 + 1.0 + 1.0 + 1.0  # one second of slack
    wait_until(lambda: not alive(child), 5, message=f"grandchild {child} still alive")


def test_a_result_finished_just_before_exit_reaches_its_client(daemon: Daemon) -> None:
    client = daemon.client()
    fut = client.submit("workers.builtin:sleep", 0.3)
    wait_until(lambda: any(s["current"] for s in daemon.status()), 10, message="task running")
    daemon.signal(signal.SIGTERM)
    assert fut.result(timeout=10) == 0.3
    assert daemon.wait_exit(timeout=10) == 0



def test_deadline_runs_from_the_running_tasks_own_start(start_daemon: StartDaemon) -> None:
    """One worker holding ten echoes, then sleep(30) with timeout=1, then one
    more echo: the echoes arrive while the sleep runs, the sleep alone fails
    Timeout, nothing else is charged an attempt."""
    d = start_daemon(workers={"count": 1, "max_prefetch": 16})
    client = d.client()
    client.map(ECHO, range(500), chunksize=1)  # fast results open the prefetch window
    echoes = [client.submit(ECHO, i) for i in range(10)]
    slow = client.with_options(timeout=1.0).submit("workers.builtin:sleep", 30)
    after = client.submit(ECHO, "after")
    assert [f.result(timeout=10) for f in echoes] == list(range(10))
    with pytest.raises(TaskError) as err:
        slow.result(timeout=20)
    assert err.value.type == "Timeout"
    assert after.result(timeout=10) == "after"
    assert d.stats()["retried"] == 0


def test_tasks_queued_behind_others_are_not_timed_from_their_handover(
    start_daemon: StartDaemon,
) -> None:
    """tasks.timeout = 1 s and one worker holding three 0.6 s tasks (1.8 s
    together): each runs within its own second, so none times out and the
    worker is never killed."""
    d = start_daemon(workers={"count": 1, "max_prefetch": 16}, tasks={"timeout": 1.0})
    client = d.client()
    pid = d.wait_all_running()[0]["pid"]
    client.map(ECHO, range(500), chunksize=1)  # fast results open the prefetch window
    futures = [client.submit("workers.builtin:sleep", 0.6) for _ in range(3)]
    assert [f.result(timeout=20) for f in futures] == [0.6, 0.6, 0.6]
    assert d.wait_all_running()[0]["pid"] == pid
