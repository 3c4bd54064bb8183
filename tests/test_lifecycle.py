"""phalanxd as an operator meets it: config checks, exit codes, signals, drain.

Exit codes (supervisor/daemon/main.py): 0 clean stop, 2 bad configuration,
3 start-up failure. A stop leaves no process behind; the ``start_daemon``
fixture checks that after every test, and the tests here check it
explicitly where stopping is the point.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.client import Client, TaskError
from tests.conftest import (
    Daemon,
    StartDaemon,
    alive,
    base_config,
    free_tcp_port,
    merge,
    phalanxd_command,
    to_toml,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent
SLEEP = "workers.builtin:sleep"
ECHO = "workers.builtin:echo"


def run(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


# ------------------------------------------------------------ config check
@pytest.mark.parametrize("command", [
    pytest.param(phalanxd_command(), id="phalanxd"),
    pytest.param([sys.executable, "-m", "supervisor"], id="python-m-supervisor"),
])
def test_check_config_accepts_good_files(tmp_path: Path, ipc_dir: Path, command: list[str]) -> None:
    """--check-config exits 0 on the shipped default config and on a full
    test config, saying ok and printing nothing on stderr."""
    path = tmp_path / "good.toml"
    path.write_text(to_toml(base_config(ipc_dir)))
    for config in (REPO / "config" / "phalanx.toml", path):
        proc = run(*command, "--check-config", str(config))
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        assert str(config) in proc.stdout and "ok" in proc.stdout
    assert not (ipc_dir / "run").exists()  # checking starts nothing


BAD_CONFIGS: dict[str, tuple[str, str]] = {
    # name: (file text, what the one stderr line must name besides the file)
    "broken TOML": ("[workers\ncount = 2\n", "invalid TOML"),
    "unknown key": ("[workers]\ncuont = 2\n", "workers.cuont"),
    "unknown section": ("[wrokers]\ncount = 2\n", "wrokers"),
    "wrong type": ('[workers]\ncount = "two"\n', "workers.count"),
    "negative number": ("[workers]\ncount = -1\n", "workers.count"),
    "bad endpoint": ('[endpoints]\nintake = "localhost:7455"\n', "endpoints.intake"),
    "bad enum": ('[workers]\nstart_method = "vfork"\n', "workers.start_method"),
    "bad module name": ('[tasks]\nallow = ["os system"]\n', "tasks.allow"),
    "not UTF-8": ("[daemon]\nlog_level = \"\xff\"\n", "UTF-8"),
}


@pytest.mark.parametrize("command", [
    pytest.param(phalanxd_command(), id="phalanxd"),
    pytest.param([sys.executable, "-m", "supervisor"], id="python-m-supervisor"),
])
@pytest.mark.parametrize(("text", "names"), list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS))
def test_check_config_rejects_bad_files_with_one_line(
    tmp_path: Path, command: list[str], text: str, names: str
) -> None:
    """A bad config makes --check-config exit 2 with exactly one stderr line
    naming the file and the offending dotted key (or what is wrong)."""
    path = tmp_path / "bad.toml"
    path.write_bytes(text.encode("latin-1"))
    proc = run(*command, "--check-config", str(path))
    assert proc.returncode == 2
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0]
    assert names in lines[0]
    assert "Traceback" not in proc.stderr


def test_check_config_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    """A config path that does not exist: exit 2, one line naming it."""
    path = tmp_path / "nope.toml"
    proc = run(*phalanxd_command(), "--check-config", str(path))
    assert proc.returncode == 2
    lines = stderr_lines(proc)
    assert len(lines) == 1 and str(path) in lines[0] and "no such file" in lines[0]


def test_bad_config_stops_phalanxd_before_it_starts_anything(
    tmp_path: Path, ipc_dir: Path
) -> None:
    """phalanxd --config with an invalid file exits 2 at once: no runtime
    directory, no sockets, no worker processes."""
    config = merge(base_config(ipc_dir), {"workers": {"count": "two"}})
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(config))
    proc = run(*phalanxd_command(), "--config", str(path), timeout=15)
    assert proc.returncode == 2
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "workers.count" in lines[0] and str(path) in lines[0]
    assert os.listdir(ipc_dir) == []


def test_endpoint_in_use_exits_3_with_one_clear_line(
    start_daemon: StartDaemon,
) -> None:
    """An intake port that is already taken: exit 3 with one line naming the
    endpoint, and no worker was started."""
    port = free_tcp_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        d = start_daemon(endpoints={"intake": f"tcp://127.0.0.1:{port}"}, wait=False)
        assert d.wait_exit(timeout=15) == 3
    d.expected_exit = None
    lines = d.log.strip().splitlines()
    assert len(lines) == 1, d.log
    assert "cannot start" in lines[0] and f"tcp://127.0.0.1:{port}" in lines[0]
    assert "intake" in lines[0]


# ---------------------------------------------------------------- stopping
def test_sigterm_stops_cleanly_and_leaves_no_process(daemon: Daemon) -> None:
    """SIGTERM on an idle daemon: exit 0, and neither the workers, the
    forkserver nor a grandchild a task started (ignoring SIGTERM) is left."""
    client = daemon.client()
    grandchild = psutil.Process(
        client.submit("workers.testing:spawn_child", 60).result(timeout=10))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=15) == 0
    assert daemon.leftover_processes(timeout=5) == []
    assert not alive(grandchild)  # gone, or a zombie: not running
    assert not Path(daemon.control.removeprefix("ipc://")).exists()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "control shutdown"])
def test_stop_drains_queued_and_running_tasks(daemon: Daemon, how: str) -> None:
    """SIGTERM, SIGINT and the control 'shutdown' command all drain: tasks
    already running and tasks still queued finish and are answered, new
    submissions are refused with ShuttingDown, then the daemon exits 0."""
    client = daemon.client()
    futures = [client.submit(SLEEP, 0.3) for _ in range(6)]
    wait_until(lambda: all(s["current"] for s in daemon.status()), timeout=10,
               message="both workers busy")
    assert daemon.stats()["queued"] == 4
    if how == "control shutdown":
        reply = daemon.call("shutdown")
        assert reply["draining"] is True and reply["unfinished"] == 6
    else:
        daemon.signal(getattr(signal, how))
    wait_until(lambda: daemon.log_events("drain_started"), timeout=5,
               message="drain never started")
    late = daemon.client().submit(ECHO, "too late")
    with pytest.raises(TaskError) as info:
        late.result(timeout=10)
    assert info.value.type == "ShuttingDown"

    assert [f.result(timeout=15) for f in futures] == [0.3] * 6
    assert daemon.wait_exit(timeout=15) == 0
    assert daemon.leftover_processes(timeout=5) == []
    stopped = daemon.log_events("daemon_stopped")
    assert stopped and stopped[-1]["succeeded"] >= 6


def test_second_sigterm_stops_at_once_failing_running_tasks(
    start_daemon: StartDaemon,
) -> None:
    """A second SIGTERM during a long drain does not wait for the grace: the
    daemon stops within seconds and the running task fails ShuttingDown."""
    d = start_daemon(shutdown={"grace": 120.0, "stop_timeout": 2.0})
    client = d.client()
    slow = client.submit(SLEEP, 30)
    wait_until(lambda: any(s["current"] for s in d.status()), timeout=10,
               message="the sleep never started")
    d.signal(signal.SIGTERM)
    wait_until(lambda: d.log_events("drain_started"), timeout=5, message="drain never started")
    assert not slow.done()
    d.signal(signal.SIGTERM)
    with pytest.raises(TaskError) as info:
        slow.result(timeout=10)
    assert info.value.type == "ShuttingDown"
    # Bounded by 10 s against a 120 s grace: the second SIGTERM did not wait.
    assert d.wait_exit(timeout=10) == 0
    assert d.leftover_processes(timeout=5) == []


def test_client_leaks_no_file_descriptors(daemon: Daemon) -> None:
    """A Client used for work and then closed and joined gives back every
    file descriptor it opened in this process."""
    def fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    before = fds()
    client = Client(daemon.intake)
    assert client.map(ECHO, range(100)) == list(range(100))
    assert client.submit(ECHO, "x").result(timeout=10) == "x"
    assert client.ping()["workers"] == 2
    client.close()
    client.join(timeout=10)
    wait_until(lambda: fds() == before, timeout=5,
               message=lambda: f"fds left open: {sorted(fds() - before)}")
