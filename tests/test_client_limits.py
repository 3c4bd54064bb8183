"""The client never hangs on work that cannot be done: oversized tasks, no
daemon at all, a malformed endpoint, and a backlog the daemon should not
have to hold (issue 9, items 1, 2, 3, 13)."""

from __future__ import annotations

import time

import pytest

from supervisor.client import Client, DaemonUnreachable, TaskError, TooLarge
from tests.conftest import StartDaemon, free_tcp_port, wait_until

ECHO = "workers.builtin:echo"
SLEEP = "workers.builtin:sleep"
LIMIT = 256 * 1024  # the daemon's tasks.max_message_bytes in these tests


def test_big_tasks_travel_in_batches_split_by_bytes(start_daemon: StartDaemon) -> None:
    """Twenty 100 KB arguments against a 256 KB message limit: the client
    splits its batches by bytes, so every task is accepted and answered."""
    d = start_daemon(tasks={"max_message_bytes": LIMIT})
    with Client(d.intake, max_message_bytes=LIMIT) as c:
        blobs = [bytes([i]) * 100_000 for i in range(20)]
        assert c.map(ECHO, blobs, timeout=30) == blobs
    assert d.stats()["refused"] == {}


def test_one_oversized_task_is_refused_at_once_with_the_sizes(start_daemon: StartDaemon
                                                              ) -> None:
    """A task bigger than a message may be is never sent: submit and map
    raise TooLarge naming the task's size and the limit, and the client
    still closes at once."""
    d = start_daemon(tasks={"max_message_bytes": LIMIT})
    with Client(d.intake, max_message_bytes=LIMIT) as c:
        with pytest.raises(TooLarge) as info:
            c.submit(ECHO, b"x" * 300_000)
        assert "300" in str(info.value) and str(LIMIT - 128) in str(info.value)
        with pytest.raises(TooLarge):
            c.map(ECHO, [b"y" * 300_000] * 3)
        assert c.submit(ECHO, 1).result(10) == 1
    assert d.stats()["accepted"] == 1


def test_a_refusal_by_the_daemon_fails_the_request_it_refuses(start_daemon: StartDaemon
                                                              ) -> None:
    """A client that believes the limit is higher sends a 300 KB task among
    small ones; the daemon's TooLarge carries the request's ref, so the
    client knows which request it refuses: a batch is sent again task by
    task, and only the big task fails (no hang, also on exit). The
    refusals are counted in stats."""
    d = start_daemon(tasks={"max_message_bytes": LIMIT})
    with Client(d.intake) as c:  # the default limit: 16 MiB
        futs = [c.submit(ECHO, b"x" * 300_000 if i == 3 else i) for i in range(8)]
        with pytest.raises(TaskError) as info:
            futs[3].result(10)
        assert info.value.type == "TooLarge"
        assert "limit is 262144" in info.value.message
        assert [f.result(10) for i, f in enumerate(futs) if i != 3] == [0, 1, 2, 4, 5, 6, 7]
        # ...and in a map, where the tasks surely share a batch:
        with pytest.raises(TaskError, match="TooLarge"):
            c.map(ECHO, [1, 2, b"y" * 300_000, 4], timeout=10)
        assert c.map(ECHO, [1, 2, 3], timeout=10) == [1, 2, 3]
    assert d.stats()["refused"]["TooLarge"] >= 2


def test_no_daemon_fails_pending_work_with_a_named_error() -> None:
    """Nothing listens at the endpoint: futures fail with DaemonUnreachable
    after ``unreachable_after``, a shorter result() timeout says what it
    waited for, and map/apply take a timeout too."""
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    with Client(endpoint, unreachable_after=0.5) as c:
        fut = c.submit(ECHO, 1)
        with pytest.raises(TimeoutError, match=r"task .* \(workers.builtin:echo\) did not finish"):
            fut.result(0.05)
        t0 = time.monotonic()
        with pytest.raises(DaemonUnreachable, match=endpoint):
            fut.result(30)
        assert time.monotonic() - t0 < 10
        with pytest.raises(DaemonUnreachable):
            c.apply(ECHO, (2,), timeout=30)
    with Client(endpoint, unreachable_after=60) as c:
        with pytest.raises(TimeoutError, match=r"results not in within 0\.2s"):
            c.map(ECHO, range(3), timeout=0.2)
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.2s"):
            c.apply(ECHO, (1,), timeout=0.2)
        with pytest.raises(TimeoutError, match="a pong from"):
            c.ping(timeout=0.2)
        c.terminate()


@pytest.mark.parametrize("endpoint", ["127.0.0.1:7455", "tcp://", "", "tcp//x:1", "tcp://nohost"])
def test_a_malformed_endpoint_is_a_value_error_in_the_caller(endpoint: str) -> None:
    with pytest.raises(ValueError, match=r"endpoint|connect"):
        Client(endpoint)


def test_empty_endpoint_list_is_refused() -> None:
    with pytest.raises(ValueError):
        Client([])


def test_the_submit_window_keeps_the_backlog_in_the_client(start_daemon: StartDaemon) -> None:
    """With ``max_in_flight=8`` the daemon never holds more than 8 of a
    burst of 300 tasks, and every one of them completes."""
    d = start_daemon()
    with Client(d.intake, max_in_flight=8) as c:
        futs = [c.submit(SLEEP, 0.005) for _ in range(300)]
        held = []
        while not all(f.done() for f in futs[:200]):
            s = d.stats()
            held.append(s["queued"] + s["in_flight"])
        assert max(held) <= 8
        assert [f.result(30) for f in futs] == [0.005] * 300
        assert c.pending == 0
    assert d.stats()["accepted"] == 300


def test_the_window_bounds_bytes_too(start_daemon: StartDaemon) -> None:
    """A byte bound smaller than one task still lets tasks through, one
    at a time."""
    d = start_daemon()
    with Client(d.intake, max_in_flight_bytes=1000) as c:
        blobs = [bytes([i]) * 5000 for i in range(20)]
        futs = [c.submit(ECHO, b) for b in blobs]
        wait_until(lambda: all(f.done() for f in futs), 30, message="tasks never completed")
        assert [f.result() for f in futs] == blobs
