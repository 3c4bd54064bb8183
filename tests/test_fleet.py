"""One client, several real daemons: work goes where there is credit, and
nothing is lost when a daemon is SIGKILLed.

Daemons listen on distinct loopback addresses (127.0.0.2, .3, ...) as
separate hosts would; loopback needs no CURVE.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from supervisor.client import Client, TaskError
from supervisor.client.fleet import FleetClient
from tests.conftest import Daemon, StartDaemon, free_tcp_port, wait_until

PID = "workers.builtin:pid"
SLEEP = "workers.builtin:sleep"
FAST = {"heartbeat": 0.1, "dead_after": 1.0}  # generous: the machine may be loaded


def on_host(start_daemon: StartDaemon, host: str, workers: int, **extra: object) -> Daemon:
    port, pub = free_tcp_port(), free_tcp_port()
    return start_daemon(
        workers={"count": workers, **extra},
        endpoints={"intake": f"tcp://{host}:{port}", "publisher": f"tcp://{host}:{pub}"},
    )


def fleet(*daemons: Daemon) -> FleetClient:
    c = Client([d.intake for d in daemons], **FAST)
    assert isinstance(c, FleetClient)
    return c


def owner(daemons: list[Daemon]) -> dict[int, Daemon]:
    return {pid: d for d in daemons for pid in d.slot_pids().values()}


def alive_with_credit(c: FleetClient, endpoint: str, credit: int) -> bool:
    return any(p["endpoint"] == endpoint and p["alive"] and p["credit"] == credit
               for p in c.daemons())


def test_an_idle_daemon_gets_the_work_a_busy_one_cannot_start(start_daemon: StartDaemon
                                                              ) -> None:
    busy = on_host(start_daemon, "127.0.0.2", 1, credit_prefetch=0)
    idle = on_host(start_daemon, "127.0.0.3", 2)
    hog = Client(busy.intake)
    try:
        held = [hog.submit(SLEEP, 1.5) for _ in range(2)]  # one runs, one queued
        with fleet(busy, idle) as c:
            wait_until(lambda: alive_with_credit(c, busy.intake, 0)
                       and alive_with_credit(c, idle.intake, 6), 10,
                       message=lambda: f"credit never showed: {c.daemons()}")
            pids = [f.result(10) for f in [c.submit(PID) for _ in range(30)]]
        where = Counter(owner([busy, idle])[p].intake for p in pids)
        assert where == {idle.intake: 30}
        assert [f.result(10) for f in held] == [1.5, 1.5]
    finally:
        hog.terminate()


def test_work_spreads_by_capacity_over_three_hosts(start_daemon: StartDaemon) -> None:
    """1, 3 and 2 workers: each daemon gets work in proportion (ideal 1:3:2)."""
    small = on_host(start_daemon, "127.0.0.2", 1)
    big = on_host(start_daemon, "127.0.0.3", 3)
    mid = on_host(start_daemon, "127.0.0.4", 2)
    with fleet(small, big, mid) as c:
        wait_until(lambda: all(p["alive"] for p in c.daemons()), 10)
        futs = [c.submit(SLEEP, 0.04) for _ in range(150)]
        for f in futs:
            f.result(30)
        sent = {p["endpoint"]: p["sent"] for p in c.daemons()}
    assert 0.18 <= sent[small.intake] / sent[big.intake] <= 0.5, sent  # ideal 1/3
    assert 0.45 <= sent[mid.intake] / sent[big.intake] <= 0.9, sent  # ideal 2/3


def test_sigkilled_daemon_loses_nothing_and_gets_work_again_after_restart(
        start_daemon: StartDaemon) -> None:
    doomed = on_host(start_daemon, "127.0.0.2", 2)
    other = on_host(start_daemon, "127.0.0.3", 2)
    with fleet(doomed, other) as c:
        wait_until(lambda: all(p["alive"] for p in c.daemons()), 10)
        futs = [c.submit(SLEEP, 0.2) for _ in range(40)]
        wait_until(lambda: any(s["current"] for s in doomed.status()), 10)
        doomed.snapshot()
        os.killpg(doomed.pid, signal.SIGKILL)
        assert [f.result(30) for f in futs] == [0.2] * 40
        assert c.moved > 0
        assert not next(p for p in c.daemons() if p["endpoint"] == doomed.intake)["alive"]
        doomed.wait_exit(5)
        doomed.launch().wait_ready()
        wait_until(lambda: alive_with_credit(c, doomed.intake, 6), 10,
                   message=lambda: f"restarted daemon never came back: {c.daemons()}")
        pids = [f.result(10) for f in [c.submit(PID) for _ in range(30)]]
    where = Counter(owner([doomed, other])[p].intake for p in pids)
    assert where[doomed.intake] > 0, where


def test_a_fleet_client_with_one_endpoint_works_like_client(daemon: Daemon) -> None:
    with FleetClient(daemon.intake, **FAST) as c:
        assert c.map("workers.builtin:echo", range(100)) == list(range(100))
        assert c.apply("workers.builtin:echo", (5,)) == 5
        assert c.ping()["workers"] == 2


def test_with_no_daemon_reachable_pending_tasks_fail_with_unreachable(tmp_path: Path) -> None:
    """A bounded wait: no daemon alive for unreachable_after fails what is
    pending with a named error instead of leaving futures hanging."""
    nobody = [f"ipc://{tmp_path}/a", f"ipc://{tmp_path}/b"]
    with FleetClient(nobody, heartbeat=0.05, dead_after=0.2, unreachable_after=0.3) as c:
        fut = c.submit(PID)
        with pytest.raises(TaskError) as info:
            fut.result(10)
    assert info.value.type == "Unreachable"
    assert "no daemon answered" in info.value.message
