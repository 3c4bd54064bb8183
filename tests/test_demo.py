"""``python -m supervisor.demo`` end to end: a real phalanxd, real SIGKILLs.

Each test gives the demo its own config with ipc endpoints in a private
short directory (no port can collide with another test or a running
daemon), runs it as a subprocess and judges its exit status and output.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

DEMO = [sys.executable, "-m", "supervisor.demo"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # ipc:// paths must fit in sun_path (~107 bytes); tmp_path may not.
    base = tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix="pxdemo", dir=base if len(base) <= 40 else "/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_config(directory: Path, intake: str | None = None,
                 allow: tuple[str, ...] = ("workers.builtin", "workers.testing")) -> Path:
    config = directory / "phalanx.toml"
    config.write_text(
        "[daemon]\n"
        f'runtime_dir = "{directory}/run"\n'
        'log_format = "json"\n'
        "[workers]\n"
        "count = 2\n"
        "[tasks]\n"
        f"allow = {json.dumps(list(allow))}\n"
        "[endpoints]\n"
        f'intake = "{intake or f"ipc://{directory}/intake"}"\n'
        f'publisher = "ipc://{directory}/pub"\n'
        f'control = "ipc://{directory}/run/control"\n'
        "[shutdown]\n"
        "grace = 10.0\n"
        "stop_timeout = 2.0\n"
    )
    return config


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_demo_answers_every_task_exactly_once_while_workers_die(short_dir: Path) -> None:
    """2000 tasks under chaos: nothing lost or duplicated, poison quarantined,
    workers killed and replaced, the daemon stops with 0 and leaves nothing."""
    config = write_config(short_dir)
    started = time.monotonic()
    run = subprocess.run(
        [*DEMO, "--config", str(config), "--tasks", "2000", "--json", "--seed", "7"],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    s = json.loads(run.stdout)
    assert s["ok"] is True, s["verdict"]
    assert s["submitted"] == 2000 + 4
    assert s["lost"] == 0
    assert s["duplicates"] == 0
    assert s["succeeded"] + s["failed"] == s["submitted"]
    assert s["published_results"] == s["submitted"]  # each id published once
    assert s["wrong_values"] == 0
    assert s["workers_killed"] >= 1
    assert s["workers_restarted"] >= 1
    assert s["failed_by_type"]["TaskFailure"]["count"] > 0
    modes = {p["mode"]: p for p in s["poison"]}
    assert set(modes) == {"kill", "segv", "abort", "exit"}
    for p in modes.values():
        assert p["type"] == "WorkerCrashed" and p["quarantined"], p
    # Each names how its worker died (unless the chaos SIGKILL got there first).
    for mode, how in (("segv", "SIGSEGV"), ("abort", "SIGABRT"), ("exit", "exit code 13"),
                      ("kill", "SIGKILL")):
        assert how in modes[mode]["message"] or "SIGKILL" in modes[mode]["message"], modes[mode]
    assert s["quarantined"] >= 4
    assert s["daemon_exit_code"] == 0
    assert s["workers_left"] == []
    # The Pool part: the seed's code with a worker SIGKILLed mid-map.
    assert s["pool"]["results_right"] is True
    assert s["pool"]["killed_mid_task"] and s["pool"]["replaced"] is True
    assert s["pool"]["processes_left"] == []
    assert elapsed < 60


def test_demo_refuses_a_busy_port_before_starting_anything(short_dir: Path) -> None:
    """An intake port someone else holds: a clear message, exit 2, no daemon."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_config(short_dir, intake=f"tcp://127.0.0.1:{port}")
        run = subprocess.run([*DEMO, "--config", str(config), "--tasks", "10"],
                             cwd=REPO, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert f"intake port {port}" in run.stderr and "not free" in run.stderr
    assert "started phalanxd" not in run.stderr
    assert run.stdout == ""


def test_demo_needs_the_testing_tasks_allowed_explicitly(short_dir: Path) -> None:
    """The demo's poison tasks are not in the default allowlist: a config
    that does not allow workers.testing is refused before anything starts,
    with the key and the module named."""
    config = write_config(short_dir, allow=("workers.builtin",))
    run = subprocess.run([*DEMO, "--config", str(config), "--tasks", "10"],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "tasks.allow must list workers.testing" in run.stderr
    assert "started phalanxd" not in run.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_demo_interrupted_stops_the_daemon_and_every_worker(
        short_dir: Path, signum: int) -> None:
    """Ctrl-C (or SIGTERM) mid-stream: exit 130, no daemon or worker left."""
    config = write_config(short_dir)
    proc = subprocess.Popen(
        [*DEMO, "--config", str(config), "--tasks", "1000000"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # the pytest timeout bounds this
            seen.append(line)
            if "streaming" in line:
                break
        else:
            pytest.fail("demo never started streaming:\n" + "".join(seen))
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert len(descendants) >= 3  # daemon, forkserver, workers
        proc.send_signal(signum)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 130, rest
        assert "interrupted" in rest
        deadline = time.monotonic() + 5
        while any(alive(p) for p in descendants) and time.monotonic() < deadline:
            time.sleep(0.05)  # orphans may take a moment to be reaped
        assert [p.pid for p in descendants if alive(p)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
