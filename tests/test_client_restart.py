"""The client survives a restart of the daemon: what it was waiting for
is sent again, by id, to the new daemon, and every future completes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

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
