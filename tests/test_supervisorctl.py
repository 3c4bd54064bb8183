"""The stock supervisorctl drives phalanxd through observe.xmlrpc.

Every command the issue names, run as the real program against a live
daemon, checked by its output and its exit code (supervisorctl's own LSB
codes: 0 ok, 1 error, 3 not running, 4 no such process).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import supervisorctl_venv
from tests.conftest import Daemon, StartDaemon, _factory, _teardown_all, short_tempdir, wait_until

CALL_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def ctl_path() -> Path:
    try:
        return supervisorctl_venv.ensure()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot install the stock supervisorctl: {exc}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    path = short_tempdir()
    start, started = _factory(path, tmp_path_factory.mktemp("phalanxd"))
    try:
        yield start(observe={"xmlrpc": str(path / "run" / "supervisor.sock")})
    finally:
        try:
            _teardown_all(started)
        finally:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


def sock(d: Daemon) -> str:
    return str(d.config["observe"]["xmlrpc"])


def ctl(ctl_path: Path, d: Daemon, *args: str) -> tuple[int, str]:
    done = subprocess.run([str(ctl_path), "-s", f"unix://{sock(d)}", *args],
                          capture_output=True, text=True, timeout=CALL_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def test_socket_is_private(served: Daemon) -> None:
    assert stat.S_IMODE(os.stat(sock(served)).st_mode) == 0o600


def test_status_pid_version(ctl_path: Path, served: Daemon) -> None:
    slots = served.status()
    code, out = ctl(ctl_path, served, "status")
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 2
    for line, s in zip(lines, slots, strict=True):
        assert line.split()[:2] == [f"phalanx:worker-{s['slot']}", "RUNNING"]
        assert f"pid {s['pid']}, uptime 0:" in line
    assert ctl(ctl_path, served, "pid") == (0, f"{served.pid}\n")
    assert ctl(ctl_path, served, "pid", "all") == (0, "".join(f"{s['pid']}\n" for s in slots))
    assert ctl(ctl_path, served, "pid", "phalanx:worker-1") == (0, f"{slots[1]['pid']}\n")
    assert ctl(ctl_path, served, "version") == (0, "0.1.0\n")
    code, out = ctl(ctl_path, served, "status", "worker-9")
    assert (code, out) == (4, "worker-9: ERROR (no such process)\n")


def test_stop_start_restart(ctl_path: Path, served: Daemon) -> None:
    assert ctl(ctl_path, served, "stop", "phalanx:worker-0") == (0, "phalanx:worker-0: stopped\n")
    assert served.status()[0]["state"] == "STOPPED"
    code, out = ctl(ctl_path, served, "status")
    assert code == 3 and "phalanx:worker-0                 STOPPED" in out
    code, out = ctl(ctl_path, served, "stop", "phalanx:worker-0")
    assert (code, out) == (0, "phalanx:worker-0: ERROR (not running)\n")  # as with supervisord
    assert ctl(ctl_path, served, "start", "phalanx:worker-0") == (0, "phalanx:worker-0: started\n")
    assert served.status()[0]["state"] == "RUNNING"
    assert ctl(ctl_path, served, "start", "phalanx:worker-0") == (
        0, "phalanx:worker-0: ERROR (already started)\n")
    before = served.slot_pids()
    code, out = ctl(ctl_path, served, "restart", "all")
    assert code == 0 and out.count(": stopped\n") == 2 and out.count(": started\n") == 2, out
    after = served.slot_pids()
    assert not set(before.values()) & set(after.values())


def test_signal(ctl_path: Path, served: Daemon) -> None:
    pid = served.status()[1]["pid"]
    assert ctl(ctl_path, served, "signal", "KILL", "phalanx:worker-1") == (
        0, "phalanx:worker-1: signalled\n")
    served.wait_all_running(not_pids={pid})
    code, out = ctl(ctl_path, served, "signal", "NOSUCH", "phalanx:worker-1")
    assert (code, out) == (1, "phalanx:worker-1: ERROR (bad signal name)\n")


def test_tail_and_maintail(ctl_path: Path, served: Daemon) -> None:
    client = served.client()
    client.apply("workers.testing:say", ["hello-stdout"])
    client.apply("workers.testing:say", ["hello-stderr", "stderr"])

    def tails(*stream: str) -> str:
        return "".join(ctl(ctl_path, served, "tail", f"phalanx:worker-{i}", *stream)[1]
                       for i in (0, 1))

    # The worker's pipe is read by the loop as it comes: wait for it.
    wait_until(lambda: "hello-stdout" in tails(), 10, interval=0.2)
    wait_until(lambda: "hello-stderr" in tails("stderr"), 10, interval=0.2)
    code, out = ctl(ctl_path, served, "tail", "-5", "phalanx:worker-9")
    assert (code, out) == (1, "phalanx:worker-9: ERROR (no such process name)\n")
    code, out = ctl(ctl_path, served, "maintail")
    assert code == 0 and '"event": "worker_started"' in out


@pytest.mark.parametrize("args", [["tail", "-f", "phalanx:worker-{slot}"], ["maintail", "-f"]])
def test_follow(ctl_path: Path, served: Daemon, args: list[str]) -> None:
    """tail -f / maintail -f: new output arrives while supervisorctl waits;
    the listener lets go when supervisorctl is stopped."""
    slot = served.status()[0]
    argv = [a.format(slot=slot["slot"]) for a in args]
    proc = subprocess.Popen([str(ctl_path), "-s", f"unix://{sock(served)}", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        seen = bytearray()

        def read() -> bytes:
            chunk = proc.stdout.read() if proc.stdout else None
            seen.extend(chunk or b"")
            return bytes(seen)

        wait_until(lambda: b"Press Ctrl-C to exit" in read(), 20)
        client = served.client()
        marker = "followed-marker"
        wait_until(lambda: client.apply("workers.testing:say", [marker]) and (
            marker.encode() in read() if args[0] == "tail" else b"worker_" in read()), 20,
            interval=0.3, message=lambda: bytes(seen).decode(errors="replace"))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def test_methods_come_from_an_explicit_table(ctl_path: Path, served: Daemon) -> None:
    """A dotted name that supervisord once walked with getattr
    (CVE-2017-11610) is an unknown method here, as is anything not listed."""
    script = f"""
import xmlrpc.client
from supervisor.xmlrpc import SupervisorTransport
p = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, "unix://{sock(served)}"))
for name in ("supervisor.supervisord.options.execve", "supervisor.__init__", "system.methodHelp"):
    try:
        getattr(p, name)()
    except xmlrpc.client.Fault as f:
        print(f.faultCode)
print("supervisor.getAllProcessInfo" in p.system.listMethods())
r = p.system.multicall([{{"methodName": "supervisor.getPID", "params": []}},
                        {{"methodName": "supervisor.nope", "params": []}}])
print(r[0][0], r[1]["faultCode"])
"""
    # cwd=/ so that `supervisor` is theirs, not this checkout's.
    done = subprocess.run([str(supervisorctl_venv.PYTHON), "-c", script], capture_output=True,
                          text=True, timeout=CALL_TIMEOUT, cwd="/")
    assert done.stdout.split() == ["1", "1", "1", "True", str(served.pid), "1"], done.stderr


def test_shutdown(ctl_path: Path, start_daemon: StartDaemon, ipc_dir: Path) -> None:
    d = start_daemon(observe={"xmlrpc": str(ipc_dir / "sv.sock")})
    assert ctl(ctl_path, d, "shutdown") == (0, "Shut down\n")
    assert d.wait_exit(20) == 0
    assert not Path(sock(d)).exists()


def test_a_listener_that_cannot_bind_stops_the_daemon_cleanly(start_daemon: StartDaemon,
                                                              ipc_dir: Path) -> None:
    """Exit 3 (start-up failure) naming the listener, workers stopped, no
    process left behind (teardown checks)."""
    d = start_daemon(wait=False, observe={"xmlrpc": str(ipc_dir / "no-such-dir" / "s.sock")})
    assert d.wait_exit(30) == 3
    d.expected_exit = None
    assert (f"cannot start observe listener observe.xmlrpc {ipc_dir}/no-such-dir/s.sock: "
            "No such file or directory") in d.log
