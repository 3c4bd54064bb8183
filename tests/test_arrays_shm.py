"""Who unlinks a shared-memory segment, including when its owner dies.

    argument segment  made by the client  unlinked by the client when the task
                      settles, or by its resource tracker if the client dies
    result segment    made by a worker    unlinked by the client as it reads it,
                      or by the worker after RESULT_TTL if nobody does, or by
                      the next worker to start if that worker died too

Each test watches /dev/shm itself. PHALANX_SHM_RESULT_TTL is shortened for
the daemons started here (their workers inherit the environment).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from supervisor.payload import layout
from supervisor.payload.shm import SHM_DIR
from tests.conftest import RawPeer, StartDaemon, wait_until

np = pytest.importorskip("numpy")

ALLOW = {"tasks": {"allow": ["workers.builtin", "workers.arrays"]}}
TTL = 0.5  # seconds, for the daemons of this module
LOCAL = msgspec.msgpack.Ext(layout.LOCAL, b"")
N = 1024 * 1024  # float64s: 8 MiB, over the shared-memory threshold

CLIENT = f"""
import sys, numpy as np
from supervisor.client import Client
c = Client(sys.argv[1])
c.submit("workers.arrays:hold", np.ones({N}), 1.0)
print("submitted", flush=True)
sys.stdin.read()  # until killed
"""


def mine(prefix: str) -> set[str]:
    return {n for n in os.listdir(SHM_DIR) if n.startswith(prefix)}


def result_segment(peer: RawPeer, task_id: str) -> str:
    """Ask for a big result as a local client would, and never read it."""
    peer.send_msg({"op": "submit", "ack": False, "tasks": [
        {"task": "workers.arrays:zeros", "id": task_id, "args": [N, LOCAL]}]})
    res = peer.results_for({task_id}, timeout=20)[task_id]
    assert res["ok"], res
    value = res["value"]
    assert isinstance(value, msgspec.msgpack.Ext) and value.code == layout.SHM
    data = memoryview(value.data)
    _, _, pos = layout.unpack_header(data)
    name, nbytes = layout.unpack_shm(data, pos)
    assert nbytes == N * 8 and os.path.exists(os.path.join(SHM_DIR, name))
    return name


def test_client_killed_mid_task_leaves_no_segment(start_daemon: StartDaemon) -> None:
    """SIGKILL a client while a worker runs on its shared-memory argument:
    the client's resource tracker unlinks the segment; the task still ends."""
    daemon = start_daemon(ALLOW)
    proc = subprocess.Popen([sys.executable, "-c", CLIENT, daemon.intake],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"submitted\n"
        prefix = f"phx-a{proc.pid}-"
        wait_until(lambda: mine(prefix), 10, message="the client made no argument segment")
        wait_until(lambda: any(s["current"] for s in daemon.status()), 10,
                   message="no worker picked up the task")
        proc.kill()
        proc.wait(10)
        wait_until(lambda: not mine(prefix), 20,
                   message=lambda: f"segments outlived their client: {mine(prefix)}")
        wait_until(lambda: not any(s["current"] for s in daemon.status()), 10,
                   message="the task never finished")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        try:
            # The resource tracker it started exits on its own once it has
            # cleaned up; anything left of the group goes now.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_unread_result_is_unlinked_by_its_worker(start_daemon: StartDaemon,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A local client that never reads its result (it died): the worker
    unlinks the segment once it is RESULT_TTL old, at its next task."""
    monkeypatch.setenv("PHALANX_SHM_RESULT_TTL", str(TTL))
    daemon = start_daemon(ALLOW, workers={"count": 1})
    peer = daemon.raw()
    name = result_segment(peer, "unread")
    path = os.path.join(SHM_DIR, name)
    started = time.monotonic()

    def swept() -> bool:
        peer.send_msg({"op": "submit", "ack": False, "tasks": [
            {"task": "workers.builtin:echo", "id": f"tick-{time.monotonic()}", "args": [1]}]})
        return not os.path.exists(path)

    wait_until(swept, 10, interval=0.1, message=f"{name} was never unlinked")
    assert time.monotonic() - started >= TTL * 0.5  # not before its time (clock slack)


def test_unread_result_of_a_dead_worker_is_unlinked_by_the_next(
        start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHALANX_SHM_RESULT_TTL", str(TTL))
    daemon = start_daemon(ALLOW, workers={"count": 1})
    name = result_segment(daemon.raw(), "orphan")
    path = Path(SHM_DIR) / name
    wait_until(lambda: time.time() - path.stat().st_mtime > TTL, 10,
               message="segment never aged")
    old = daemon.slot_pids()[0]
    os.kill(old, signal.SIGKILL)
    daemon.wait_all_running(not_pids={old}, timeout=20)
    wait_until(lambda: not path.exists(), 10, message=f"{name} outlived its worker")
