"""phalanxd as systemd runs it: notify protocol, watchdog, signals, drain,
reload, start-up failures, and the install helper. Nothing is mocked.

A ``NotifyListener`` plays systemd's part: an ``AF_UNIX`` datagram socket
bound where ``$NOTIFY_SOCKET`` points (a path in a short temp dir, or an
abstract ``@name``), read with socket timeouts. phalanxd is a real
subprocess started by ``tests.conftest``'s ``start_daemon`` (ipc endpoints
in a short temp dir, 2 workers, its own session; on teardown SIGTERM, then
SIGKILL to its process group, and a failure if anything it started outlived
it), with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` in its environment.
``WATCHDOG_PID`` is left unset: systemd sets it to the main pid, which a
test only learns after starting the daemon.

A datagram is queued on the listener the moment the daemon's ``sendto()``
returns, so "X was sent before Y" is read from queue order. Watchdog
intervals are measured only while the test does nothing but receive, so
the time a datagram is received is the time it arrived.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import (
    Daemon,
    RawPeer,
    StartDaemon,
    alive,
    base_config,
    merge,
    phalanxd_command,
    to_toml,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "systemd" / "install.sh"
UNIT = REPO / "systemd" / "phalanx.service"
SHIPPED_CONFIG = REPO / "config" / "phalanx.toml"

WATCHDOG_USEC = 400_000  # pings every 0.2 s
PING_INTERVAL = WATCHDOG_USEC / 2_000_000
READY_TIMEOUT = 30.0
SLEEP = "workers.builtin:sleep"
ECHO = "workers.builtin:echo"
STATUS_LINE = re.compile(
    r"workers (?P<up>\d+)/(?P<slots>\d+) up, queue (?P<queue>\d+), "
    r"in flight (?P<in_flight>\d+), done (?P<done>\d+)"
)


def monotonic_usec() -> int:
    """What systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


# ------------------------------------------------------------ listener
@dataclass(frozen=True)
class Notice:
    """One sd_notify datagram as received."""

    index: int
    at: float  # time.monotonic() when received
    fields: dict[str, str]

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.fields.items())


def _status(notice: Notice) -> dict[str, int]:
    m = STATUS_LINE.fullmatch(notice.fields["STATUS"])
    assert m, f"unexpected STATUS line: {notice.fields['STATUS']!r}"
    return {k: int(v) for k, v in m.groupdict().items()}


class NotifyListener:
    """systemd's end of the notify protocol, for one test.

    ``take`` advances a cursor: each call returns the next datagram (after
    the one it returned last) that sets a key, so consecutive ``take``
    calls prove the order in which the daemon sent the messages.
    """

    def __init__(self, form: str, directory: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if form == "path":
            address = str(directory / "notify")
            self.env_value = address
        elif form == "abstract":
            name = f"phalanx-test-{secrets.token_hex(8)}"
            address = "\0" + name
            self.env_value = "@" + name
        else:
            raise ValueError(form)
        self.sock.bind(address)
        self.seen: list[Notice] = []
        self._cursor = 0

    def _recv(self, timeout: float) -> Notice | None:
        if timeout <= 0:
            self.sock.setblocking(False)
        else:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        notice = Notice(len(self.seen), time.monotonic(), fields)
        self.seen.append(notice)
        return notice

    def drain(self) -> list[Notice]:
        """Take in what is already queued, without waiting."""
        got = []
        while (notice := self._recv(0)) is not None:
            got.append(notice)
        return got

    def take(self, key: str, timeout: float = 10.0,
             where: Callable[[Notice], bool] = lambda n: True) -> Notice:
        """The next datagram after the cursor that sets ``key`` (and matches
        ``where``), waiting up to ``timeout`` s for it."""
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.seen):
                notice = self.seen[self._cursor]
                self._cursor += 1
                if key in notice.fields and where(notice):
                    return notice
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {key}= within {timeout:g}s; received: {[str(n) for n in self.seen]}"
                )
            self._recv(left)

    def pings_for(self, seconds: float) -> list[float]:
        """Receive for ``seconds`` doing nothing else; arrival times of WATCHDOG=1."""
        start = len(self.seen)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._recv(left)
        self._cursor = len(self.seen)
        return [n.at for n in self.seen[start:] if "WATCHDOG" in n.fields]

    def with_key(self, key: str) -> list[Notice]:
        return [n for n in self.seen if key in n.fields]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(request: pytest.FixtureRequest, ipc_dir: Path) -> Iterator[NotifyListener]:
    """A notify listener; parametrize indirectly with "path" or "abstract"."""
    listener = NotifyListener(getattr(request, "param", "path"), ipc_dir)
    yield listener
    listener.close()


@pytest.fixture
def sd_start(start_daemon: StartDaemon, notify: NotifyListener,
             monkeypatch: pytest.MonkeyPatch) -> Callable[..., Daemon]:
    """Start phalanxd as systemd would (notify socket, watchdog); by default
    return once READY=1 arrived."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    def start(*, ready: bool = True, **sections: dict[str, Any]) -> Daemon:
        d = start_daemon(wait=False, **sections)
        if ready:
            notify.take("READY", READY_TIMEOUT)
        return d

    return start


# -------------------------------------------------------------- clients
def submit(peer: RawPeer, tasks: list[tuple[str, str, list[Any]]],
           results: dict[str, dict[str, Any]], timeout: float = 10.0) -> dict[str, Any]:
    """Send one DEALER submit and return its ack; results that arrive on the
    way are added to ``results`` (a second result for an id fails)."""
    peer.send_msg({"op": "submit", "tasks": [
        {"task": name, "id": task_id, "args": args} for task_id, name, args in tasks
    ]})
    deadline = time.monotonic() + timeout
    while True:
        msg = peer.recv(max(deadline - time.monotonic(), 0.001))
        if msg.get("op") == "results":
            collect(msg, results)
        else:
            return msg  # type: ignore[no-any-return]


def collect(msg: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    for res in msg["results"]:
        assert res["id"] not in results, f"second result for {res['id']}: {res}"
        results[res["id"]] = res


def await_results(peer: RawPeer, ids: set[str], results: dict[str, dict[str, Any]],
                  timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ids <= results.keys():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no result for {sorted(ids - results.keys())}")
        msg = peer.recv(left)
        if msg.get("op") == "results":
            collect(msg, results)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


# ================================================== the notify sequence
@pytest.mark.parametrize("notify", ["path", "abstract"], indirect=True)
def test_notify_sequence_ready_status_watchdog_reload_stopping(
    sd_start: Callable[..., Daemon], notify: NotifyListener
) -> None:
    """READY=1 once both workers run and intake answers; STATUS= follows the
    queue and the workers; WATCHDOG=1 every WATCHDOG_USEC/2; SIGHUP gives
    RELOADING=1 with a current MONOTONIC_USEC, then READY=1; SIGTERM gives
    STOPPING=1 and exit 0. Both NOTIFY_SOCKET forms (path and @abstract)."""
    # max_prefetch 1: a worker holds one task, the rest wait in the queue.
    d = sd_start(ready=False, workers={"count": 2, "max_prefetch": 1})
    ready = notify.take("READY", READY_TIMEOUT)
    # At READY=1 the intake socket was bound already and answers at once...
    assert Path(d.intake.removeprefix("ipc://")).is_socket()
    pong = d.raw().request({"op": "ping"}, timeout=1.0)
    assert pong["op"] == "pong" and pong["workers"] == 2
    # ...and every slot was RUNNING (slots only leave RUNNING by dying).
    assert [s["state"] for s in d.status()] == ["RUNNING", "RUNNING"]
    assert _status(ready)["up"] == 2 and _status(ready)["slots"] == 2
    assert notify.with_key("READY") == [ready]

    # STATUS= stays current: queued work shows up, then its completion.
    peer = d.raw()
    results: dict[str, dict[str, Any]] = {}
    ids = [f"st-{i}" for i in range(10)]  # 10 x 0.4 s on 2 workers: 2 s
    ack = submit(peer, [(i, SLEEP, [0.4]) for i in ids], results)
    assert ack["accepted"] == ids
    busy = notify.take("STATUS", 3.0, where=lambda n: _status(n)["queue"] > 0)
    # In flight is 2, or 1 in the instant between a result and the next dispatch.
    assert 1 <= _status(busy)["in_flight"] <= 2 and _status(busy)["up"] == 2
    idle = notify.take("STATUS", 5.0, where=lambda n: _status(n)["done"] == 10)
    assert _status(idle)["queue"] == 0 and _status(idle)["in_flight"] == 0
    await_results(peer, set(ids), results, timeout=5.0)
    assert all(r["ok"] for r in results.values())

    # WATCHDOG=1 at half of WATCHDOG_USEC, measured while only receiving.
    pings = notify.pings_for(1.6)
    intervals = [b - a for a, b in itertools.pairwise(pings)]
    assert len(intervals) >= 5, pings
    assert all(0.1 <= i <= 0.35 for i in intervals), intervals
    assert 0.15 <= sorted(intervals)[len(intervals) // 2] <= 0.25, intervals

    # SIGHUP: RELOADING=1 and MONOTONIC_USEC in one datagram, then READY=1.
    before = monotonic_usec()
    d.signal(signal.SIGHUP)
    reloading = notify.take("RELOADING", 5.0)
    after = monotonic_usec()
    assert reloading.fields["RELOADING"] == "1"
    assert before <= int(reloading.fields["MONOTONIC_USEC"]) <= after
    assert notify.take("READY", 5.0).index > reloading.index
    assert d.raw().request({"op": "ping"}, timeout=2.0)["op"] == "pong"

    # SIGTERM: STOPPING=1, a clean exit, and nothing after it says READY.
    d.signal(signal.SIGTERM)
    stopping = notify.take("STOPPING", 5.0)
    assert d.wait_exit(10.0) == 0
    notify.drain()
    assert all(n.index < stopping.index for n in notify.with_key("READY"))


def test_frozen_loop_stops_watchdog_pings_and_they_resume(
    sd_start: Callable[..., Daemon], notify: NotifyListener
) -> None:
    """A wedged main loop sends no WATCHDOG=1; once it runs again pings resume.

    SIGSTOP is the honest way to wedge the loop from outside: phalanxd's
    loop is its only Python thread, and WATCHDOG=1 is sent from that loop
    (``Daemon.run``) and nowhere else: there is no helper thread that could
    keep pinging while the loop is stuck, because there is none. Freezing
    the process therefore freezes exactly the code that pings, while the
    process stays alive and keeps its sockets, which is what the watchdog
    exists to catch: a daemon that is there but does no work. (Tasks cannot
    wedge it from inside: they run in the workers, not in the loop.)
    """
    d = sd_start()
    notify.take("WATCHDOG", 2.0)
    os.kill(d.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: psutil.Process(d.pid).status() == psutil.STATUS_STOPPED, 5.0,
                   message="phalanxd never stopped")
        notify.drain()  # pings sent before the freeze took hold
        frozen_at = len(notify.seen)
        silence = 4 * PING_INTERVAL  # more than 3 intervals
        notify.pings_for(silence)
        assert notify.with_key("WATCHDOG")[-1].index < frozen_at, (
            "WATCHDOG=1 arrived from a stopped process"
        )
    finally:
        os.kill(d.pid, signal.SIGCONT)
    # Resumed: the overdue ping comes at once, then the usual rhythm.
    first = notify.take("WATCHDOG", 1.0)
    pings = [first.at, *notify.pings_for(1.0)]
    intervals = [b - a for a, b in itertools.pairwise(pings)]
    assert len(intervals) >= 3, pings
    assert all(i <= 0.35 for i in intervals), intervals
    assert d.raw().request({"op": "ping"}, timeout=2.0)["op"] == "pong"


# ============================================================== drain
def test_sigterm_drains_running_and_queued_tasks_then_exits_0_leaving_no_process(
    sd_start: Callable[..., Daemon], notify: NotifyListener
) -> None:
    """SIGTERM: STOPPING=1, new work refused with ShuttingDown, every
    accepted task (running or still queued) gets its result within the
    grace, exit 0, and every process the daemon started is gone."""
    d = sd_start(workers={"count": 2, "max_prefetch": 1})
    peer = d.raw()
    results: dict[str, dict[str, Any]] = {}
    ids = [f"drain-{i}" for i in range(6)]  # 2 running, 4 queued: 1.5 s of work
    assert submit(peer, [(i, SLEEP, [0.5]) for i in ids], results)["accepted"] == ids
    wait_until(lambda: all(s["current"] for s in d.status()), 5.0,
               message="workers never both busy")
    family = descendants(d.pid)
    assert len(family) >= 2, family  # the workers (and the forkserver)

    d.signal(signal.SIGTERM)
    notify.take("STOPPING", 5.0)
    late = submit(d.raw(), [("late", ECHO, [1])], {})
    assert late["accepted"] == []
    assert late["rejected"][0]["error"]["type"] == "ShuttingDown"

    await_results(peer, set(ids), results, timeout=d.config["shutdown"]["grace"])
    assert {i: (r["ok"], r.get("value")) for i, r in results.items()} == {
        i: (True, 0.5) for i in ids
    }
    assert d.wait_exit(10.0) == 0
    wait_until(lambda: not any(alive(p) for p in family), 5.0,
               message=lambda: f"left behind: {[p.pid for p in family if alive(p)]}")


def test_second_sigterm_ends_a_long_drain_at_once(
    sd_start: Callable[..., Daemon], notify: NotifyListener
) -> None:
    """A second SIGTERM during a drain that would take 30 s stops the daemon
    within 5 s with exit 0; the unfinished task fails with ShuttingDown."""
    d = sd_start(shutdown={"grace": 60.0, "stop_timeout": 2.0})
    peer = d.raw()
    results: dict[str, dict[str, Any]] = {}
    assert submit(peer, [("long", SLEEP, [30])], results)["accepted"] == ["long"]
    d.slot_holding("long")
    family = descendants(d.pid)
    d.signal(signal.SIGTERM)
    notify.take("STOPPING", 5.0)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(15.0) == 0  # far below the 30 s task and the 60 s grace
    await_results(peer, {"long"}, results, timeout=2.0)
    assert not results["long"]["ok"]
    assert results["long"]["error"]["type"] == "ShuttingDown"
    wait_until(lambda: not any(alive(p) for p in family), 5.0,
               message=lambda: f"left behind: {[p.pid for p in family if alive(p)]}")


# ============================================================= reload
def test_sighup_applies_a_changed_config_without_losing_accepted_tasks(
    sd_start: Callable[..., Daemon], notify: NotifyListener
) -> None:
    """workers.count 2 -> 3 and a new tasks.timeout via SIGHUP while a client
    keeps submitting: every accepted task gets exactly one successful
    result, status shows 3 RUNNING slots, `config` shows the new timeout."""
    d = sd_start()
    d.config_path.write_text(to_toml(merge(d.config, {
        "workers": {"count": 3}, "tasks": {"timeout": 7.5},
    })))
    peer = d.raw()
    results: dict[str, dict[str, Any]] = {}
    accepted: list[str] = []
    batches = iter(range(10_000))

    def stream() -> None:
        b = next(batches)
        tasks = [(f"r{b}-{i}", SLEEP, [0.01]) for i in range(5)]
        ack = submit(peer, tasks, results)
        assert ack["rejected"] == [], ack
        accepted.extend(ack["accepted"])

    def reload_over() -> bool:  # READY=1 after RELOADING=1
        reloading = notify.with_key("RELOADING")
        return bool(reloading) and notify.with_key("READY")[-1].index > reloading[0].index

    for _ in range(10):
        stream()
    before = monotonic_usec()
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10.0
    while not reload_over():  # keep streaming through the reload
        assert time.monotonic() < deadline, [str(n) for n in notify.seen]
        stream()
        notify.drain()
    reloading = notify.with_key("RELOADING")[0]
    assert int(reloading.fields["MONOTONIC_USEC"]) >= before
    for _ in range(10):
        stream()

    await_results(peer, set(accepted), results, timeout=15.0)
    assert len(accepted) == len(set(accepted)) >= 100
    failed = {i: r for i, r in results.items() if not r["ok"]}
    assert failed == {}
    assert results.keys() == set(accepted)

    slots = d.wait_all_running(10.0)
    assert len(slots) == 3
    cfg = d.call("config")
    assert cfg["tasks"]["timeout"] == 7.5
    assert cfg["workers"]["count"] == 3
    notify.take("STATUS", 3.0, where=lambda n: _status(n)["up"] == 3 == _status(n)["slots"])
    # Nothing more arrives: no task answered twice.
    peer_left = []
    while peer.sock.poll(0):
        peer_left.append(peer.recv())
    assert peer_left == []


def test_sighup_with_a_broken_config_keeps_the_old_one_serving(
    sd_start: Callable[..., Daemon], notify: NotifyListener
) -> None:
    """An unparsable file on SIGHUP: RELOADING=1 is still followed by
    READY=1, the failure is logged, and the daemon serves on unchanged."""
    d = sd_start()
    d.config_path.write_text("[workers\ncount = 3\n")
    d.signal(signal.SIGHUP)
    reloading = notify.take("RELOADING", 5.0)
    assert notify.take("READY", 5.0).index > reloading.index
    wait_until(lambda: d.log_events("reload_failed"), 5, message=lambda: d.log)
    assert d.call("config")["workers"]["count"] == 2
    assert [s["state"] for s in d.status()] == ["RUNNING", "RUNNING"]
    results: dict[str, dict[str, Any]] = {}
    peer = d.raw()
    assert submit(peer, [("after", ECHO, ["still here"])], results)["accepted"] == ["after"]
    await_results(peer, {"after"}, results, timeout=5.0)
    assert results["after"]["value"] == "still here"


def test_sighup_during_a_drain_is_ignored(
    sd_start: Callable[..., Daemon], notify: NotifyListener
) -> None:
    """SIGHUP after SIGTERM changes nothing: no RELOADING=1/READY=1 after
    STOPPING=1 (systemd would think the service came back), and no worker
    started that the drain would then have to stop."""
    d = sd_start()
    peer = d.raw()
    results: dict[str, dict[str, Any]] = {}
    assert submit(peer, [("slow", SLEEP, [1.0])], results)["accepted"] == ["slow"]
    d.slot_holding("slow")
    d.config_path.write_text(to_toml(merge(d.config, {"workers": {"count": 3}})))
    d.signal(signal.SIGTERM)
    stopping = notify.take("STOPPING", 5.0)
    d.signal(signal.SIGHUP)
    await_results(peer, {"slow"}, results, timeout=5.0)
    assert results["slow"]["ok"]
    assert d.wait_exit(10.0) == 0
    notify.drain()
    assert [str(n) for n in notify.seen[stopping.index + 1:]
            if "RELOADING" in n.fields or "READY" in n.fields] == []
    assert d.log_events("reload_ignored_while_stopping"), d.log
    assert {e["slot"] for e in d.log_events("worker_started")} == {0, 1}


def test_sighup_while_workers_start_does_not_send_ready_early(
    sd_start: Callable[..., Daemon], notify: NotifyListener, ipc_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGHUP before start-up is complete must not produce READY=1: that
    would tell systemd the service is up while its workers still start.
    Workers are made slow to start by an allowed module that takes 1.5 s to
    import (start method spawn, so the import happens in each worker while
    the daemon's loop already runs and pings the watchdog)."""
    (ipc_dir / "pxslowimport.py").write_text("import time\ntime.sleep(1.5)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(ipc_dir), os.environ.get("PYTHONPATH")])))
    d = sd_start(ready=False, workers={"count": 2, "start_method": "spawn"},
                 tasks={"allow": ["workers.builtin", "pxslowimport"]})
    notify.take("WATCHDOG", 10.0)  # the loop runs: signal handlers are in place
    assert notify.with_key("READY") == []
    assert [s["state"] for s in d.status()] == ["STARTING", "STARTING"]
    d.signal(signal.SIGHUP)
    notify.take("READY", READY_TIMEOUT)
    assert [s["state"] for s in d.status()] == ["RUNNING", "RUNNING"]
    wait_until(lambda: d.log_events("reload_done"), 5, message=lambda: d.log)
    assert notify.with_key("RELOADING") == []
    assert len(notify.with_key("READY")) == 1


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_rolling_reload_picks_up_upgraded_task_code(
    start_method: str, start_daemon: StartDaemon, ipc_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`phalanxctl reload` (control `reload`) after the task module changed on
    disk: every slot gets a fresh worker, and those run the new code."""
    module = ipc_dir / "pxversion.py"
    module.write_text("def version():\n    return 'v1'\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(ipc_dir), os.environ.get("PYTHONPATH")])))
    d = start_daemon(workers={"count": 2, "start_method": start_method},
                     tasks={"allow": ["workers.builtin", "pxversion"]})
    peer = d.raw()
    results: dict[str, dict[str, Any]] = {}
    assert submit(peer, [("old", "pxversion:version", [])], results)["accepted"] == ["old"]
    await_results(peer, {"old"}, results, timeout=5.0)
    assert results["old"]["value"] == "v1"

    module.write_text("def version():\n    return 'v2, upgraded'\n")
    shutil.rmtree(ipc_dir / "__pycache__", ignore_errors=True)
    old_pids = set(d.slot_pids().values())
    assert sorted(d.call("reload")["recycling"]) == [0, 1]
    d.wait_all_running(15.0, not_pids=old_pids)
    if start_method == "forkserver":  # the replaced forkserver is stopped, not leaked
        wait_until(lambda: "old_forkserver_stopped" in d.log, timeout=10,
                   message="the forkserver of the old workers was not stopped")
    ids = {f"new-{i}" for i in range(4)}
    assert sorted(submit(peer, [(i, "pxversion:version", []) for i in sorted(ids)],
                         results)["accepted"]) == sorted(ids)
    await_results(peer, ids, results, timeout=5.0)
    assert {results[i]["value"] for i in ids} == {"v2, upgraded"}


# ================================================== start-up failures
def _user(uid: int) -> str:
    return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"


def _failing_start(case: str, ipc_dir: Path, port_holder: socket.socket) -> tuple[
        dict[str, dict[str, Any]] | str, int, str]:
    """(config, expected exit status, expected stderr text) for one case."""
    config = base_config(ipc_dir)
    run_dir = Path(config["daemon"]["runtime_dir"])
    if case == "port_in_use":
        port = port_holder.getsockname()[1]
        config["endpoints"]["intake"] = f"tcp://127.0.0.1:{port}"
        return config, 3, f"cannot bind intake endpoint tcp://127.0.0.1:{port}: Address already in use"
    if case == "runtime_dir_is_a_file":
        run_dir.write_text("")
        return config, 3, f"runtime directory {run_dir} exists but is not a directory"
    if case == "runtime_dir_of_another_user":
        if os.geteuid() != 0:
            pytest.skip("only root can make a directory owned by another uid")
        run_dir.mkdir(mode=0o700)
        os.chown(run_dir, 65534, 65534)
        return config, 3, (f"runtime directory {run_dir} belongs to {_user(65534)}, not to "
                           f"{_user(os.getuid())} who runs phalanxd (mode 0700): another user "
                           "created it first. Remove it (as that user or root), or set "
                           "daemon.runtime_dir")
    if case == "runtime_dir_world_writable":
        run_dir.mkdir()
        run_dir.chmod(0o777)
        return config, 3, (f"runtime directory {run_dir} is writable by others (mode 0777, "
                           f"owner {_user(os.getuid())}): run `chmod 700 {run_dir}`")
    if case == "runtime_dir_is_a_symlink":
        # Planted by another user where our directory would be: pointing at
        # a directory of ours (or theirs), it must never be followed.
        target = ipc_dir / "elsewhere"
        target.mkdir(mode=0o700)
        run_dir.symlink_to(target)
        if os.geteuid() == 0:
            os.lchown(run_dir, 65534, 65534)
        owner = _user(65534 if os.geteuid() == 0 else os.getuid())
        return config, 3, (f"runtime directory {run_dir} is a symbolic link (to {target}, "
                           f"created by {owner}); phalanxd never follows one there")
    if case == "lock_file_is_a_symlink":
        run_dir.mkdir(mode=0o700)
        (run_dir / "phalanxd.lock").symlink_to(ipc_dir / "victim")
        return config, 3, f"lock file {run_dir}/phalanxd.lock: is a symbolic link; remove it"
    if case == "bad_config":
        config["workers"]["count"] = -1
        return config, 2, "workers.count: Expected `int` >= 0"
    raise ValueError(case)


@pytest.mark.parametrize("case", [
    "port_in_use",
    "runtime_dir_is_a_file",
    "runtime_dir_of_another_user",
    "runtime_dir_world_writable",
    "runtime_dir_is_a_symlink",
    "lock_file_is_a_symlink",
    "bad_config",
])
def test_startup_failure_exits_nonzero_with_one_stderr_line_and_no_ready(
    case: str, ipc_dir: Path, notify: NotifyListener
) -> None:
    """Each start-up failure: exit 3 (2 for a bad config), exactly one line
    on stderr that names the cause, nothing on stdout, never READY=1."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        config, status, reason = _failing_start(case, ipc_dir, holder)
        path = ipc_dir / "phalanx.toml"
        path.write_text(to_toml(config) if isinstance(config, dict) else config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHDOG_")}
        env.update(NOTIFY_SOCKET=notify.env_value, WATCHDOG_USEC=str(WATCHDOG_USEC))
        proc = subprocess.run(
            [*phalanxd_command(), "--config", str(path)],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=30, start_new_session=True, check=False,
        )
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    prefix = "phalanxd: invalid config: " if status == 2 else "phalanxd: cannot start: "
    assert lines[0].startswith(prefix), lines[0]
    assert reason in lines[0]
    # Nothing was written through a planted link.
    assert not (ipc_dir / "elsewhere" / "phalanxd.lock").exists()
    assert not (ipc_dir / "victim").exists()
    # Whatever it sent is queued by now: it has exited.
    notify.drain()
    assert notify.with_key("READY") == [], [str(n) for n in notify.seen]


# ===================================================== install helper
def _true() -> str:
    return shutil.which("true") or sys.executable


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    """`install.sh --dry-run` (also through `make install-systemd`) lists
    the venv, pip, config and unit steps for the prefix and touches nothing."""
    prefix = tmp_path / "opt" / "phalanx"
    live = [Path("/etc/systemd/system/phalanx.service"), Path("/etc/phalanx/phalanx.toml")]
    before = [p.exists() for p in live]
    for command in (
        ["sh", str(INSTALL), "--dry-run", "--prefix", str(prefix)],
        ["make", "-s", "-C", str(REPO), "install-systemd", f"PREFIX={prefix}",
         "PYTHON=python3", "INSTALL_ARGS=--dry-run"],
    ):
        if command[0] == "make" and shutil.which("make") is None:
            continue
        r = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert f"would run: python3 -m venv {prefix}\n" in out
        assert f"would run: {prefix}/bin/python -m pip install --quiet --upgrade {REPO}\n" in out
        assert f"unit: ExecStart={prefix}/bin/phalanxd --config /etc/phalanx/phalanx.toml\n" in out
        assert "would write: /etc/systemd/system/phalanx.service (mode 0644)\n" in out
        assert not [line for line in out.splitlines() if line.startswith(("run: ", "wrote: "))]
        assert not prefix.exists()
        assert [p.exists() for p in live] == before


def test_install_into_a_fake_root_lays_out_a_unit_systemd_accepts(tmp_path: Path) -> None:
    """`install.sh --root R --prefix P --no-venv` writes R/etc/phalanx/
    phalanx.toml (0644, the shipped config) and R/etc/systemd/system/
    phalanx.service (0644, the shipped unit with ExecStart=P/bin/phalanxd);
    a second run keeps an edited config; systemd-analyze verify accepts the
    installed unit as it is (P/bin/phalanxd is a stand-in executable)."""
    root = tmp_path / "root"
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "phalanxd").symlink_to(_true())
    command = ["sh", str(INSTALL), "--root", str(root), "--prefix", str(prefix), "--no-venv"]
    r = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "systemd: not reloaded" in r.stdout

    unit = root / "etc" / "systemd" / "system" / "phalanx.service"
    config = root / "etc" / "phalanx" / "phalanx.toml"
    shipped = UNIT.read_text()
    assert unit.read_text() == shipped.replace(
        "ExecStart=/usr/local/bin/phalanxd ", f"ExecStart={prefix}/bin/phalanxd ")
    assert f"ExecStart={prefix}/bin/phalanxd --config /etc/phalanx/phalanx.toml\n" in unit.read_text()
    assert config.read_bytes() == SHIPPED_CONFIG.read_bytes()
    assert _mode(unit) == 0o644 and _mode(config) == 0o644
    assert _mode(config.parent) == 0o755 and _mode(unit.parent) == 0o755
    assert not (root / prefix.relative_to("/")).exists()  # --no-venv
    assert sorted(p.name for p in unit.parent.iterdir()) == ["phalanx.service"]

    config.write_text("# edited by the operator\n")
    r = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"config: kept existing {config}" in r.stdout
    assert config.read_text() == "# edited by the operator\n"

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on PATH; cannot verify the installed unit")
    v = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                       timeout=60, check=False)
    output = v.stdout + v.stderr
    assert v.returncode == 0, output
    assert [line for line in output.splitlines() if unit.name in line] == [], output


def test_install_refuses_a_prefix_it_cannot_put_in_execstart(tmp_path: Path) -> None:
    """A relative prefix or one with a space is refused before anything is done."""
    for bad in ("opt/phalanx", "/opt/pha lanx"):
        r = subprocess.run(["sh", str(INSTALL), "--root", str(tmp_path), "--no-venv",
                            "--prefix", bad], capture_output=True, text=True, timeout=60,
                           check=False)
        assert r.returncode == 2 and "--prefix" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


# ========================================================= the docs
OPERATIONS = REPO / "docs" / "OPERATIONS.md"


def test_operations_doc_lists_every_signal_the_daemon_handles() -> None:
    """docs/OPERATIONS.md's signal table names each signal in the daemon's
    SIGNAL_ACTIONS, so the table cannot silently fall behind the code."""
    from supervisor.daemon.daemon import SIGNAL_ACTIONS

    section = OPERATIONS.read_text().split("## Signals", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in section.splitlines() if row.startswith("| SIG")
                   or row.startswith("| second")]
    documented = set(re.findall(r"SIG[A-Z0-9]+", " ".join(first_cells)))
    assert {signal.Signals(s).name for s in SIGNAL_ACTIONS} <= documented


def test_operations_doc_second_instance_recipe_is_a_valid_unit(tmp_path: Path) -> None:
    """The copy-plus-drop-in recipe for a second daemon on one host, taken
    from docs/OPERATIONS.md as written, passes systemd-analyze verify
    (phalanxd stood in for by an existing executable, as everywhere here)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on PATH")
    doc = OPERATIONS.read_text()
    m = re.search(r"cat > /etc/systemd/system/(phalanx-b\.service\.d/\w+\.conf) <<'EOF'\n"
                  r"(.*?)\nEOF\n", doc, re.S)
    assert m, "recipe not found in docs/OPERATIONS.md"
    stand_in = _true()
    dropin = tmp_path / m[1]
    dropin.parent.mkdir()
    dropin.write_text(m[2].replace("/opt/phalanx/bin/phalanxd ", f"{stand_in} ") + "\n")
    assert f"ExecStart={stand_in} --config /etc/phalanx/b.toml" in dropin.read_text()
    unit = tmp_path / "phalanx-b.service"
    unit.write_text(UNIT.read_text().replace("ExecStart=/usr/local/bin/phalanxd ",
                                             f"ExecStart={stand_in} "))
    v = subprocess.run([analyze, "verify", unit.name], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, check=False,
                       env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"})
    output = v.stdout + v.stderr
    assert v.returncode == 0, output
    assert [line for line in output.splitlines() if "phalanx-b" in line] == [], output
