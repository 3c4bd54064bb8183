"""One client, three real daemons: work goes where there is credit, and
nothing is lost when a daemon is SIGKILLed.

The daemons listen on 127.0.0.2, .3 and .4 (free TCP ports), as separate
hosts would; loopback needs no CURVE (tests/test_fleet_netns.py runs
daemons in network namespaces of their own, with CURVE).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from supervisor.client import Client, DaemonUnreachable
from tests.conftest import Daemon, StartDaemon, free_tcp_port, wait_until

SLEEP = "workers.builtin:sleep"
PID = "workers.testing:pid"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
# Generous: a loaded machine must not make a live daemon look dead (that
# would move work needlessly, never lose it; the tests would still pass).
DEAD_AFTER = 1.0


def on_host(start_daemon: StartDaemon, host: str, workers: int) -> Daemon:
    return start_daemon(
        workers={"count": workers},
        endpoints={"intake": f"tcp://{host}:{free_tcp_port()}",
                   "publisher": f"tcp://{host}:{free_tcp_port()}"},
    )


def view(c: Client, d: Daemon) -> dict[str, Any]:
    return next(v for v in c.daemons() if v["endpoint"] == d.intake)


def succeeded(d: Daemon) -> int:
    return int(d.stats()["succeeded"])


def test_work_spreads_by_capacity_over_three_hosts(start_daemon: StartDaemon) -> None:
    """1, 3 and 2 workers: each daemon runs work in proportion to its
    workers (ideal 1:3:2), counted by the daemons themselves."""
    small, big, mid = (on_host(start_daemon, h, n) for h, n in zip(HOSTS, (1, 3, 2),
                                                                    strict=True))
    with Client([small.intake, big.intake, mid.intake], dead_after=DEAD_AFTER) as c:
        futs = [c.submit(SLEEP, 0.04) for _ in range(180)]
        assert [f.result(60) for f in futs] == [0.04] * 180
        assert c.resubmitted == 0
        sent = {d.intake: view(c, d)["sent"] for d in (small, big, mid)}
    ran = {d.intake: succeeded(d) for d in (small, big, mid)}
    print("ran per daemon (1, 3, 2 workers):", list(ran.values()))
    assert sum(ran.values()) == 180 and ran == sent, (ran, sent)
    assert 0.15 <= ran[small.intake] / ran[big.intake] <= 0.55, ran  # ideal 1/3
    assert 0.4 <= ran[mid.intake] / ran[big.intake] <= 0.95, ran  # ideal 2/3


def test_a_busy_daemon_holds_no_work_an_idle_one_could_take(start_daemon: StartDaemon
                                                            ) -> None:
    """A daemon whose one worker another client keeps busy (one long task
    running, two queued) advertises no credit: every task of ours goes to
    the idle daemon."""
    busy = start_daemon(
        workers={"count": 1},
        endpoints={"intake": f"tcp://{HOSTS[0]}:{free_tcp_port()}",
                   "publisher": f"tcp://{HOSTS[0]}:{free_tcp_port()}"},
        shutdown={"grace": 0.5},  # teardown cuts the hog's long tasks short
    )
    idle = on_host(start_daemon, HOSTS[1], 2)
    hog = Client(busy.intake)
    try:
        for _ in range(3):
            hog.submit(SLEEP, 600.0)  # outlive the test: busy never frees credit
        wait_until(lambda: busy.stats()["accepted"] >= 3, 10, message="hog's tasks never arrived")
        with Client([busy.intake, idle.intake], dead_after=DEAD_AFTER) as c:
            assert c.map(SLEEP, [0.01] * 40, timeout=60) == [0.01] * 40
            assert view(c, busy)["sent"] == 0 and view(c, busy)["alive"], c.daemons()
        assert succeeded(idle) == 40 and succeeded(busy) == 0
    finally:
        hog.terminate()


def test_sigkilled_daemon_loses_nothing_and_gets_work_again_after_restart(
        start_daemon: StartDaemon) -> None:
    """SIGKILL a daemon (its process group and workers) mid-stream: every
    future completes exactly once with its own value; restarted on the
    same endpoint, it answers again and gets work again."""
    daemons = [on_host(start_daemon, h, 2) for h in HOSTS]
    doomed = daemons[1]
    n = 60
    done: Counter[int] = Counter()
    lock = threading.Lock()

    def count(i: int) -> Any:
        def on_done(_: object) -> None:
            with lock:
                done[i] += 1
        return on_done

    with Client([d.intake for d in daemons], dead_after=DEAD_AFTER) as c:
        values = [0.1 + i / 10_000 for i in range(n)]  # each future's own value
        futs = [c.submit(SLEEP, v) for v in values]
        for i, f in enumerate(futs):
            f.add_done_callback(count(i))
        wait_until(lambda: any(s["current"] for s in doomed.status()), 10,
                   message="the doomed daemon never ran a task")
        doomed.kill_everything()
        assert [f.result(60) for f in futs] == values
        wait_until(lambda: len(done) == n, 10, message=lambda: f"callbacks: {done}")
        assert set(done.values()) == {1}
        assert c.resubmitted > 0
        assert view(c, doomed)["deaths"] >= 1 and not view(c, doomed)["alive"]

        doomed.launch().wait_ready()
        # ping() asks every daemon; the restarted one's pong makes it alive
        wait_until(lambda: c.ping() and view(c, doomed)["alive"] and view(c, doomed)["room"],
                   20, interval=0.05,
                   message=lambda: f"restarted daemon never came back: {c.daemons()}")
        pids = [f.result(60) for f in [c.submit(PID) for _ in range(30)]]
    ran_there = set(pids) & set(doomed.slot_pids().values())
    assert ran_there, (pids, doomed.slot_pids())  # its new workers ran some of them


def test_with_no_daemon_answering_pending_tasks_fail_with_a_named_error() -> None:
    """Every wait is bounded: endpoints where nobody listens fail the
    tasks with DaemonUnreachable after unreachable_after."""
    nobody = [f"tcp://{h}:{free_tcp_port()}" for h in HOSTS]
    with Client(nobody, unreachable_after=0.5, dead_after=0.2) as c:
        fut = c.submit(SLEEP, 0)
        with pytest.raises(DaemonUnreachable) as info:
            fut.result(30)
    assert "no daemon answered" in str(info.value)


def test_tasks_a_paused_daemon_refuses_go_to_another_one(start_daemon: StartDaemon) -> None:
    """The client still counts on a daemon's last credit when the operator
    pauses it: the daemon refuses our batch (Paused), and with another
    daemon taking work the tasks go there instead of failing."""
    paused, other = (on_host(start_daemon, h, 2) for h in HOSTS[:2])
    with Client([paused.intake, other.intake], dead_after=DEAD_AFTER) as c:
        wait_until(lambda: c.ping() and all(v["alive"] and v["room"] for v in c.daemons()),
                   10, interval=0.05, message=lambda: f"daemons never answered: {c.daemons()}")
        paused.call("pause")  # the client is idle: it has not heard of this
        assert c.map(SLEEP, [0.01] * 20, timeout=60) == [0.01] * 20
        assert view(c, paused)["sent"] > 0 and c.resubmitted > 0, c.daemons()
    assert succeeded(paused) == 0 and succeeded(other) == 20
