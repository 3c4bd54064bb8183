"""The client survives a restart of the daemon: what it was waiting for
is sent again, by id, to the new daemon, and every future completes; with
several daemons each is tracked on its own (issue 9, items 6, 7, 8)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import msgspec
import zmq

from supervisor.client import Client
from tests.conftest import Daemon, StartDaemon, wait_until

SLEEP = "workers.builtin:sleep"
ECHO = "workers.builtin:echo"


def test_futures_complete_after_the_daemon_is_killed_and_restarted(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """SIGKILL phalanxd while it holds tasks (running and queued), start a new
    one on the same endpoints: the client notices the new boot through its
    heartbeat, resubmits every pending task with the same id, and each
    future gets its one result."""
    first = start_daemon(workers={"count": 2})
    first.expected_exit = None  # it is SIGKILLed on purpose
    client = Client(first.intake)
    try:
        boot_before = client.ping()["boot"]
        assert client.map(ECHO, range(5)) == list(range(5))  # it is serving
        sleeps = [client.submit(SLEEP, 0.4) for _ in range(6)]
        wait_until(lambda: first.stats()["in_flight"] >= 2, timeout=10,
                   message="the daemon never held the sleep tasks")
        os.kill(first.pid, signal.SIGKILL)
        first.wait_exit(10)

        second_dir = tmp_path / "second"
        second_dir.mkdir()
        second = Daemon(first.dir, second_dir, first.config)
        try:
            second.launch().wait_ready()
            assert [f.result(timeout=30) for f in sleeps] == [0.4] * 6
            assert client.ping()["boot"] != boot_before
            assert client.resubmitted >= 1
        finally:
            second.teardown()
    finally:
        client.close()
        client.join(10)


def _restart(first: Daemon, tmp_path: Path, name: str) -> Daemon:
    """SIGKILL ``first`` and start a new phalanxd on its endpoints."""
    first.expected_exit = None
    os.kill(first.pid, signal.SIGKILL)
    first.wait_exit(10)
    logs = tmp_path / name
    logs.mkdir()
    return Daemon(first.dir, logs, first.config).launch().wait_ready()


def test_a_daemon_that_dies_before_its_first_pong_loses_nothing(
    start_daemon: StartDaemon, ipc_dir: Path
) -> None:
    """What listens first reads the client's ping and all its tasks, then
    dies without a word (a ROUTER that never answers: a daemon killed
    before its first pong). A real daemon takes the endpoint over; its
    pong answers a later ping than the unanswered first one, so the client
    knows the first run may have held its tasks and re-sends them all."""
    endpoint = f"ipc://{ipc_dir}/intake"  # where start_daemon() binds
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    doomed = ctx.socket(zmq.ROUTER)
    doomed.bind(endpoint)
    client = Client(endpoint)
    try:
        futs = [client.submit(ECHO, i) for i in range(300)]
        got = 0
        while got < 300:  # the ping, then every task, read and never answered
            assert doomed.poll(10_000), f"only {got} tasks arrived"
            body = msgspec.msgpack.decode(doomed.recv_multipart()[-1])
            got += len(body.get("tasks", []))
        doomed.close(linger=0)
        start_daemon()
        assert [f.result(30) for f in futs] == list(range(300))
        assert client.resubmitted >= 300
    finally:
        client.terminate()
        doomed.close(linger=0)
        ctx.term()


def test_apply_survives_a_daemon_restart(start_daemon: StartDaemon, tmp_path: Path) -> None:
    """apply() goes through the same heartbeat and resubmission."""
    first = start_daemon()
    client = Client(first.intake)
    got: list[object] = []
    try:
        caller = threading.Thread(target=lambda: got.append(client.apply(SLEEP, (0.5,))))
        caller.start()
        wait_until(lambda: first.stats()["in_flight"] >= 1, 10, message="apply never arrived")
        second = _restart(first, tmp_path, "second")
        try:
            caller.join(30)
            assert got == [0.5]
        finally:
            second.teardown()
    finally:
        client.terminate()


def test_two_daemons_are_tracked_apart(start_daemon: StartDaemon, tmp_path: Path) -> None:
    """Client([a, b]) spreads work over both; their alternating boots are
    no restart (nothing is re-sent while both live), and when one is
    killed and restarted every future still completes."""
    a = start_daemon()
    b = start_daemon()
    client = Client([a.intake, b.intake])
    try:
        assert client.map(ECHO, range(400), timeout=20) == list(range(400))
        assert a.stats()["accepted"] > 0 and b.stats()["accepted"] > 0
        slow = [client.submit(SLEEP, 0.2) for _ in range(20)]
        assert [f.result(20) for f in slow] == [0.2] * 20  # > 1 heartbeat of pongs
        assert client.resubmitted == 0
        futs = [client.submit(SLEEP, 0.05) for _ in range(60)]
        # Credit decides where the work goes: kill whichever holds some.
        holder: list[Daemon] = []

        def holding() -> bool:
            holder[:] = [d for d in (a, b) if d.stats()["in_flight"] >= 2]
            return bool(holder)

        wait_until(holding, 10, message="neither daemon held two tasks")
        again = _restart(holder[0], tmp_path, "again")
        try:
            assert [f.result(30) for f in futs] == [0.05] * 60
            assert client.resubmitted >= 1
        finally:
            again.teardown()
    finally:
        client.terminate()


def test_a_silent_daemon_s_work_moves_to_the_other_one(start_daemon: StartDaemon) -> None:
    """One of two daemons stops (SIGSTOP) while holding tasks: after
    ``unreachable_after`` the client re-sends them to the other daemon."""
    a = start_daemon()
    b = start_daemon()
    client = Client([a.intake, b.intake], unreachable_after=1.0)
    try:
        futs = [client.submit(SLEEP, 0.3) for _ in range(8)]
        wait_until(lambda: a.stats()["in_flight"] >= 1, 10, message="a held nothing")
        os.kill(a.pid, signal.SIGSTOP)
        try:
            assert [f.result(30) for f in futs] == [0.3] * 8
            assert client.resubmitted >= 1
        finally:
            os.kill(a.pid, signal.SIGCONT)
    finally:
        client.terminate()
