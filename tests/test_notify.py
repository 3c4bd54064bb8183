"""The sd_notify client against real AF_UNIX datagram listeners (no mocks).

Each listener plays systemd's part: it binds a datagram socket and the test
reads exactly what arrived. Datagrams on a Unix socket land in the receiver's
queue during sendto(), so "nothing else arrived" is checked with a
non-blocking recv rather than by waiting.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.daemon.notify import Notifier

RECV_TIMEOUT = 5.0


class Listener:
    """A bound datagram socket standing in for systemd's notify socket."""

    def __init__(self, bind_address: str, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_address)
        self.sock.settimeout(RECV_TIMEOUT)
        self.env_value = env_value  # what NOTIFY_SOCKET would say

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}

    def recv(self) -> str:
        return self.sock.recv(65536).decode("utf-8")

    def assert_empty(self) -> None:
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(65536)
        finally:
            self.sock.settimeout(RECV_TIMEOUT)

    def close(self) -> None:
        self.sock.close()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_fd_leaks() -> Iterator[None]:
    """Every socket a test (or the Notifier) opens must be closed by its end."""
    before = _open_fds()
    yield
    # listdir itself holds one fd while it runs, on both sides, so it cancels.
    assert _open_fds() - before == set()


@pytest.fixture
def path_listener(tmp_path: Path) -> Iterator[Listener]:
    path = str(tmp_path / "notify.sock")
    listener = Listener(path, path)
    yield listener
    listener.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    # Random so parallel test runs on one host cannot collide: the abstract
    # namespace is shared by every process in the network namespace.
    name = f"phalanx-test-{secrets.token_hex(8)}"
    listener = Listener("\0" + name, "@" + name)
    yield listener
    listener.close()


@pytest.fixture
def notifier(path_listener: Listener) -> Iterator[Notifier]:
    n = Notifier.from_env(path_listener.env())
    yield n
    n.close()


def test_ready_status_watchdog_stopping_arrive_as_exact_datagrams(
    path_listener: Listener, notifier: Notifier
) -> None:
    """Each call sends one datagram with exactly the documented KEY=VALUE lines."""
    assert notifier.enabled
    assert notifier.ready()
    assert path_listener.recv() == "READY=1\n"
    assert notifier.status("draining 3 tasks")
    assert path_listener.recv() == "STATUS=draining 3 tasks\n"
    assert notifier.watchdog()
    assert path_listener.recv() == "WATCHDOG=1\n"
    assert notifier.stopping()
    assert path_listener.recv() == "STOPPING=1\n"
    path_listener.assert_empty()
    assert notifier.dropped == 0


def test_ready_with_status_is_one_datagram(path_listener: Listener, notifier: Notifier) -> None:
    """ready(status) carries READY=1 and STATUS= together, so the unit never
    turns active with a stale status."""
    assert notifier.ready("4 workers up")
    assert path_listener.recv() == "READY=1\nSTATUS=4 workers up\n"
    path_listener.assert_empty()


def test_reloading_carries_monotonic_usec(path_listener: Listener, notifier: Notifier) -> None:
    """reloading() sends RELOADING=1 and MONOTONIC_USEC (CLOCK_MONOTONIC, µs)
    in the same datagram, as Type=notify-reload requires."""
    before = time.monotonic_ns() // 1000
    assert notifier.reloading()
    after = time.monotonic_ns() // 1000
    lines = path_listener.recv().split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert lines[2:] == [""]  # trailing newline, nothing else


def test_send_fields_and_raw_text(path_listener: Listener, notifier: Notifier) -> None:
    """send() renders keyword fields as KEY=VALUE lines in order, sends raw
    text verbatim, and rejects newlines inside a field value."""
    assert notifier.send(STATUS="x", MAINPID=1234)
    assert path_listener.recv() == "STATUS=x\nMAINPID=1234\n"
    assert notifier.send("EXTEND_TIMEOUT_USEC=5000000\n")
    assert path_listener.recv() == "EXTEND_TIMEOUT_USEC=5000000\n"
    with pytest.raises(ValueError):
        notifier.send(STATUS="two\nlines")
    with pytest.raises(TypeError):
        notifier.send()
    with pytest.raises(TypeError):
        notifier.send("READY=1\n", STATUS="x")
    path_listener.assert_empty()


def test_status_with_newline_is_flattened(path_listener: Listener, notifier: Notifier) -> None:
    """A multi-line status (an error message, say) goes out as one STATUS line
    instead of smuggling a second assignment."""
    assert notifier.status("bad config\nREADY=1")
    assert path_listener.recv() == "STATUS=bad config READY=1\n"


def test_abstract_namespace_address(abstract_listener: Listener) -> None:
    """NOTIFY_SOCKET=@name reaches a socket bound at NUL+name (Linux abstract
    namespace)."""
    with Notifier.from_env(abstract_listener.env()) as n:
        assert n.enabled
        assert n.ready("up")
        assert abstract_listener.recv() == "READY=1\nSTATUS=up\n"
        assert n.stopping()
        assert abstract_listener.recv() == "STOPPING=1\n"
        assert n.dropped == 0


def test_unset_notify_socket_is_a_noop() -> None:
    """Without NOTIFY_SOCKET nothing is opened or sent, and no watchdog is
    scheduled even if WATCHDOG_USEC is set."""
    before = _open_fds()
    n = Notifier.from_env({"WATCHDOG_USEC": "10000000"})
    assert _open_fds() == before  # no socket was created
    assert not n.enabled
    assert n.watchdog_interval is None
    assert n.next_watchdog_at is None
    assert not n.watchdog_due(time.monotonic() + 1e9)
    for call in (n.ready, n.watchdog, n.reloading, n.stopping, lambda: n.status("x")):
        assert call() is False
    assert n.send(READY=1) is False
    assert n.dropped == 0
    n.close()
    n.close()


def test_unsupported_address_disables() -> None:
    """A relative path or an unknown scheme (e.g. vsock:) disables notify
    rather than failing daemon start-up."""
    for value in ("relative.sock", "vsock:2:1234", "@", ""):
        n = Notifier.from_env({"NOTIFY_SOCKET": value})
        assert not n.enabled, value
        n.close()


def test_default_environ_is_os_environ(
    path_listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """from_env() with no argument reads the process environment."""
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.env_value)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with Notifier.from_env() as n:
        assert n.ready()
        assert path_listener.recv() == "READY=1\n"


def test_removed_socket_file_counts_a_drop(tmp_path: Path) -> None:
    """When the listener is closed and its file removed (ENOENT), sends return
    False, count a drop and do not raise."""
    path = tmp_path / "gone.sock"
    listener = Listener(str(path), str(path))
    listener.close()
    path.unlink()
    with Notifier.from_env(listener.env()) as n:
        assert n.ready("up") is False
        assert n.watchdog() is False
        assert n.dropped == 2
        assert n.enabled  # still usable once systemd is back


def test_closed_listener_counts_a_drop(tmp_path: Path) -> None:
    """A socket file with nobody bound behind it (ECONNREFUSED) is a drop, not
    an error."""
    path = tmp_path / "closed.sock"
    listener = Listener(str(path), str(path))
    listener.close()  # the file stays, the peer is gone
    assert path.exists()
    with Notifier.from_env(listener.env()) as n:
        assert n.stopping() is False
        assert n.dropped == 1


def test_full_listener_queue_drops_instead_of_blocking(
    path_listener: Listener, notifier: Notifier
) -> None:
    """A listener that never reads fills its queue; further sends are dropped
    (EAGAIN) at once instead of blocking the loop."""
    sent = 0
    for i in range(10_000):
        if not notifier.status(f"tick {i}"):
            break
        sent += 1
    assert notifier.dropped == 1
    assert sent > 0
    # What did arrive is intact and in order.
    assert path_listener.recv() == "STATUS=tick 0\n"


def test_dropped_status_is_resent(tmp_path: Path) -> None:
    """A STATUS that was dropped is not remembered as sent, so the same text is
    delivered once a listener is back."""
    path = tmp_path / "late.sock"
    with Notifier.from_env({"NOTIFY_SOCKET": str(path)}) as n:
        assert n.status("starting") is False  # nobody listening yet
        listener = Listener(str(path), str(path))
        try:
            assert n.status("starting")
            assert listener.recv() == "STATUS=starting\n"
        finally:
            listener.close()


def test_duplicate_status_is_not_resent(path_listener: Listener, notifier: Notifier) -> None:
    """An identical STATUS text is sent once; a new text, and a return to the
    old one, are sent."""
    assert notifier.status("a")
    assert notifier.status("a") is False
    assert notifier.status("b")
    assert notifier.status("a")
    assert path_listener.recv() == "STATUS=a\n"
    assert path_listener.recv() == "STATUS=b\n"
    assert path_listener.recv() == "STATUS=a\n"
    path_listener.assert_empty()


def test_ready_does_not_repeat_current_status(
    path_listener: Listener, notifier: Notifier
) -> None:
    """ready(status) after status(same text), as after a reload, still sends
    READY=1 but leaves the unchanged STATUS out."""
    assert notifier.status("serving")
    assert notifier.ready("serving")
    assert path_listener.recv() == "STATUS=serving\n"
    assert path_listener.recv() == "READY=1\n"


def test_watchdog_interval_is_half_of_watchdog_usec(path_listener: Listener) -> None:
    """WATCHDOG_USEC=10 s gives a 5 s ping interval, with WATCHDOG_PID unset or
    equal to our pid."""
    for extra in ({}, {"WATCHDOG_PID": str(os.getpid())}):
        with Notifier.from_env(path_listener.env(WATCHDOG_USEC="10000000", **extra)) as n:
            assert n.watchdog_interval == pytest.approx(5.0)


def test_watchdog_schedule_drives_the_loop(path_listener: Listener) -> None:
    """The first ping is due at once; after watchdog(now) the next one is due
    exactly one interval later, which the loop uses as its poll timeout."""
    env = path_listener.env(WATCHDOG_USEC="2000000")
    with Notifier.from_env(env) as n:
        now = time.monotonic()
        assert n.watchdog_due(now)
        assert n.watchdog(now)
        assert path_listener.recv() == "WATCHDOG=1\n"
        assert n.next_watchdog_at == pytest.approx(now + 1.0)
        assert not n.watchdog_due(now + 0.999)
        assert n.watchdog_due(now + 1.0)


def test_watchdog_pid_of_another_process_disables_watchdog(path_listener: Listener) -> None:
    """WATCHDOG_PID naming another process (we inherited the variables) means
    the watchdog is not ours: no interval, never due. Notify itself still works."""
    env = path_listener.env(WATCHDOG_USEC="10000000", WATCHDOG_PID=str(os.getppid()))
    with Notifier.from_env(env) as n:
        assert n.enabled
        assert n.watchdog_interval is None
        assert n.next_watchdog_at is None
        assert not n.watchdog_due(time.monotonic() + 1e9)


def test_invalid_watchdog_values_disable_watchdog(path_listener: Listener) -> None:
    """Garbage or non-positive WATCHDOG_USEC / WATCHDOG_PID disable the watchdog
    instead of raising."""
    cases = [
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "me"},
    ]
    for extra in cases:
        with Notifier.from_env(path_listener.env(**extra)) as n:
            assert n.enabled
            assert n.watchdog_interval is None, extra


def test_close_makes_every_method_a_noop(path_listener: Listener) -> None:
    """After close() (twice) nothing is sent and nothing raises."""
    n = Notifier.from_env(path_listener.env(WATCHDOG_USEC="10000000"))
    n.close()
    n.close()
    assert not n.enabled
    assert n.watchdog_interval is None
    assert n.ready() is False
    assert n.status("x") is False
    assert n.watchdog() is False
    path_listener.assert_empty()
