"""A private pool's life: its own options, what stopping it leaves behind
(nothing, even when its owner is SIGKILLed), functions of ``__main__``, and
a configured daemon refusing the pickle lane."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from supervisor import Pool, config
from supervisor.client import TaskError
from supervisor.errors import ConfigError
from supervisor.protocol import PICKLE_TASK
from tests import pool_tasks as t
from tests.conftest import Daemon, alive, wait_until

REPO = Path(__file__).resolve().parent.parent


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def all_gone(procs: list[psutil.Process]) -> bool:
    return not any(alive(p) for p in procs)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_close_join_waits_for_work_then_leaves_no_process() -> None:
    fds = open_fds()
    pool = Pool(2, initializer=t.remember, initargs=("greeting", "hello"))
    procs = tree(pool.daemon_pid)
    assert len(procs) >= 3  # the daemon, its forkserver, two workers
    pending = pool.map_async(t.sleep_then, [0.2] * 4)
    assert pool.apply(t.recall, ("greeting",)) == "hello"  # initializer ran in the worker
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(t.square, (1,))
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(t.square, [1])
    pool.join()
    assert pending.get(0) == [None] * 4  # join waited for it
    assert all_gone(procs)
    assert not Path(pool.control_endpoint.removeprefix("ipc://")).parent.exists()
    assert open_fds() <= fds  # no pipe, socket or wake fd left open


def test_terminate_and_context_manager_stop_at_once() -> None:
    with Pool(1) as pool:
        procs = tree(pool.daemon_pid)
        slow = pool.apply_async(t.sleep_then, (30,))
    # As multiprocessing, leaving the block terminates the pool.
    assert all_gone(procs)
    with pytest.raises(TaskError) as info:
        slow.get(5)  # multiprocessing would leave this hanging
    assert info.value.type == "ClientClosed"


def test_the_private_daemon_dying_fails_what_waits_instead_of_hanging() -> None:
    pool = Pool(1)
    procs = tree(pool.daemon_pid)
    slow = pool.apply_async(t.sleep_then, (1.0, "never"))
    wait_until(lambda: any(s.get("current") for s in pool.workers()), 10)
    os.kill(pool.daemon_pid, signal.SIGKILL)  # as the OOM killer would
    with pytest.raises(TaskError) as info:
        slow.get(10)
    assert info.value.type == "ClientClosed" and "died" in info.value.message
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(t.square, (1,))
    pool.terminate()
    # Its worker finishes the task it holds, sees its pipe closed and exits.
    wait_until(lambda: all_gone(procs), 15,
               message=lambda: f"left behind: {[p.pid for p in procs if alive(p)]}")


def test_maxtasksperchild_replaces_workers() -> None:
    with Pool(1, maxtasksperchild=2) as pool:
        pids = [pool.apply(t.pid) for _ in range(6)]
    assert len(set(pids)) == 3, pids
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=2) as theirs:
        assert len({theirs.apply(t.pid) for _ in range(6)}) == 3


SCRIPT = """
import os, sys
if os.environ.get("NO_CLOUDPICKLE"):
    sys.modules["cloudpickle"] = None  # as if the optional extra were absent
from supervisor import Pool

def cube(x):
    print(f"cube of {x}", file=sys.stderr, flush=True)  # reaches the owner's stderr
    return x ** 3

class Box:
    def __init__(self, v):
        self.v = v

def unbox(b):
    return b.v + OFFSET

OFFSET = 100

if __name__ == "__main__":
    pool = Pool(2)
    print(pool.daemon_pid, flush=True)
    print(pool.map(cube, range(5)), pool.apply(unbox, (Box(1),)), flush=True)
    if os.environ.get("HANG"):
        sys.stdin.read()  # until the test kills us
    elif not os.environ.get("NO_CLOSE"):
        pool.close()
        pool.join()
"""


def run_script(tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    script = tmp_path / "main_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=tmp_path)


@pytest.mark.parametrize("no_cloudpickle", ["", "1"])
def test_functions_of_main_run_and_exit_without_close_leaves_nothing(
        tmp_path: Path, no_cloudpickle: str) -> None:
    """__main__'s functions and classes, by reference (workers import the
    script as spawn does) or by value (cloudpickle); the script returns
    without closing its pool and atexit stops it."""
    proc = run_script(tmp_path, NO_CLOUDPICKLE=no_cloudpickle, NO_CLOSE="1")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    daemon_pid, results = out.splitlines()
    assert results == "[0, 1, 8, 27, 64] 101", out + err
    # What a task prints reaches the owner's terminal, as with multiprocessing.
    assert "cube of 4" in err
    assert not psutil.pid_exists(int(daemon_pid)) or not alive(psutil.Process(int(daemon_pid)))


def test_owner_sigkilled_leaves_no_process(tmp_path: Path) -> None:
    proc = run_script(tmp_path, HANG="1")
    assert proc.stdout is not None
    daemon_pid = int(proc.stdout.readline())
    assert proc.stdout.readline().startswith("[0, 1, 8")
    procs = tree(daemon_pid)
    assert len(procs) >= 3
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    wait_until(lambda: all_gone(procs), 15,
               message=lambda: f"left behind: {[p.pid for p in procs if alive(p)]}")
    proc.stdin.close()  # type: ignore[union-attr]
    proc.stdout.close()
    proc.stderr.close()  # type: ignore[union-attr]


def test_a_configured_daemon_refuses_pickle_at_intake(daemon: Daemon) -> None:
    client = daemon.client()
    with pytest.raises(TaskError) as info:
        client.apply(PICKLE_TASK, ("", None, b"\x80\x05N."))
    assert info.value.type == "NotAllowed"
    assert "private" in info.value.message
    with pytest.raises(TaskError) as info2:
        client.submit(PICKLE_TASK, "", None, b"").result(10)
    assert info2.value.type == "NotAllowed"
    assert client.call("workers.builtin:echo", 1) == 1  # the daemon serves on


def test_a_config_file_cannot_turn_pickle_on(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[tasks]\naccept_pickle = true\n")
    with pytest.raises(ConfigError, match=r"tasks\.accept_pickle"):
        config.load(path)


UNGUARDED = """
import multiprocessing, sys
sys.modules["cloudpickle"] = None  # by reference: workers import this script
from supervisor import Pool

def double(x):
    return 2 * x

# No `if __name__ == "__main__":` guard. "spawn": a fork would not import it.
pool = Pool(1, context=multiprocessing.get_context("spawn"))
try:
    print(pool.map(double, [1, 2]))
finally:
    pool.terminate()
"""


def test_an_unguarded_main_script_fails_with_a_clear_error(tmp_path: Path) -> None:
    """As with multiprocessing's spawn (a fork imports nothing, as with
    multiprocessing's fork): the worker importing the script would
    start pools without end; it refuses, and the caller gets why."""
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert run.returncode == 1
    assert "RuntimeError" in run.stderr
    assert "if __name__ == '__main__':" in run.stderr


def test_numpy_arrays_travel_by_pickle_on_a_private_pool() -> None:
    np = pytest.importorskip("numpy")
    with Pool(1) as pool:
        out = pool.apply(np.add, (np.arange(10, dtype=np.float32), 1))
    assert out.dtype == np.float32 and out.tolist() == [float(i + 1) for i in range(10)]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_each_start_method_serves_and_leaves_nothing(method: str) -> None:
    """"fork" forks the daemon from this process and its workers from the
    daemon; "spawn" starts a fresh interpreter and a fork server. Either
    way the pool works and leaves no process and no fd behind."""
    fds = open_fds()
    pool = Pool(2, context=multiprocessing.get_context(method))
    assert pool.map(t.square, range(10)) == [x * x for x in range(10)]
    wait_until(lambda: len(pool.worker_pids()) == 2, 10)
    procs = tree(pool.daemon_pid)
    pool.close()
    pool.join()
    assert all_gone(procs)
    assert open_fds() <= fds


def _sockets_of(pid: int) -> set[str]:
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile
    return held


def test_a_forked_daemon_and_its_workers_hold_none_of_the_owners_fds() -> None:
    """A socket the owner has open (a server it will close, say) is not kept
    open by its pool: the forked daemon closes what it inherited."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        mine = f"socket:[{os.fstat(server.fileno()).st_ino}]"
        with Pool(2, context=multiprocessing.get_context("fork")) as pool:
            assert pool.apply(t.square, (3,)) == 9
            wait_until(lambda: len(pool.worker_pids()) == 2, 10)
            for pid in [pool.daemon_pid, *pool.worker_pids()]:
                assert mine not in _sockets_of(pid), pid
