"""A phalanxd under test: started as a subprocess, always torn down.

``PhalanxUnderTest`` writes a temporary config (2 workers, ipc endpoints in
a temporary directory, so nothing collides with a daemon a developer already
runs), starts ``python -m supervisor`` in its own session, waits until the
control socket reports every slot RUNNING and the intake answers a ping,
and on exit stops it in stages: SIGTERM to its process group, a deadline,
SIGKILL to the group, then SIGKILL to any descendant still alive (workers
put themselves in process groups of their own, so the group signal alone
does not reach them if the daemon died first).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import psutil
import zmq

REPO = Path(__file__).resolve().parent.parent
WORKERS = 2
NOOP = "bench.tasks:noop"
CRASH = "workers.testing:crash"
STAMP_AND_DIE = "bench.tasks:stamp_and_die"
STAMP_AND_SLEEP = "bench.tasks:stamp_and_sleep"

_T0 = time.perf_counter()


def say(message: str) -> None:
    """Progress, on stderr, stamped with seconds since the run began."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


# Deliberate kills come by the dozen within seconds here; the default
# restart intensities (20 per 10 s per slot, 100 per 10 s for the pool)
# would park slots in BACKOFF and we would time the backoff, not the
# restart. The restart path is the same.
CONFIG = """\
[daemon]
runtime_dir = "{run}"
log_level = "warning"
log_format = "json"

[workers]
count = {workers}

[endpoints]
intake = "{intake}"
publisher = "{publisher}"
control = "{control}"

[tasks]
allow = ["workers.builtin", "workers.testing", "workers.arrays", "bench.tasks"]

[restart]
max_restarts = 100000
daemon_max_restarts = 0

[shutdown]
grace = 2.0
stop_timeout = 2.0

[journal]
enabled = {journal_on}
synchronous = "{synchronous}"
path = "{journal_path}"
"""

CONFIG_CHANGES = {
    "workers.count": WORKERS,
    "tasks.allow": ["workers.builtin", "workers.testing", "workers.arrays", "bench.tasks"],
    "restart.max_restarts": 100000,
    "restart.daemon_max_restarts": 0,
    "shutdown.grace": 2.0,
    "shutdown.stop_timeout": 2.0,
    "journal.path": "<the run's temporary directory>/journal.db",
}


class Control:
    """One persistent DEALER on the control socket (cheap enough to poll)."""

    def __init__(self, endpoint: str) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)

    def call(self, cmd: str, timeout: float = 5.0) -> Any:
        self._sock.send(msgspec.msgpack.encode({"cmd": cmd, "args": {}}))
        if not self._sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"control {cmd!r}: no reply within {timeout:g}s")
        reply = msgspec.msgpack.decode(self._sock.recv())
        if not reply.get("ok"):
            raise RuntimeError(f"control {cmd!r} failed: {reply.get('error')}")
        return reply.get("result")

    def status(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("status")
        return result

    def wait_all_running(self, timeout: float = 30.0, interval: float = 0.0005) -> float:
        """Poll status until every slot is RUNNING; return when (perf_counter)."""
        deadline = time.perf_counter() + timeout
        while True:
            slots = self.status()
            now = time.perf_counter()
            if all(s["state"] == "RUNNING" and s["pid"] for s in slots):
                return now
            if now > deadline:
                raise TimeoutError(f"slots not all RUNNING after {timeout:g}s: {slots}")
            time.sleep(interval)

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PhalanxUnderTest:
    def __init__(self, workers: int = WORKERS, journal: str = "normal") -> None:
        """``journal``: "off", "normal" or "full" (its synchronous mode)."""
        self.workers = workers
        self.journal = journal
        self.dir = Path(tempfile.mkdtemp(prefix="phalanx-bench-"))
        # The daemon listens on loopback TCP (what users configure by default)
        # and, as endpoints.local does, on ipc in its runtime dir.
        port = _free_port()
        self.tcp_intake = f"tcp://127.0.0.1:{port}"
        self.intake = f"ipc://{self.dir / 'run' / 'intake.sock'}"
        self.publisher = f"ipc://{self.dir / 'pub.sock'}"
        self.control_endpoint = f"ipc://{self.dir / 'control.sock'}"
        self.log_path = self.dir / "phalanxd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.control: Control | None = None
        self._tree: dict[int, psutil.Process] = {}

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> PhalanxUnderTest:  # noqa: PYI034 - never subclassed
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        cfg = self.dir / "phalanx.toml"
        cfg.write_text(CONFIG.format(
            run=self.dir / "run", workers=self.workers, intake=self.tcp_intake,
            publisher=self.publisher, control=self.control_endpoint,
            journal_on="false" if self.journal == "off" else "true",
            synchronous="full" if self.journal == "full" else "normal",
            journal_path=self.dir / "journal.db",
        ))
        env = dict(os.environ)
        # Workers import bench.tasks: the repository must be on their path.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.pop("NOTIFY_SOCKET", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "--config", str(cfg)],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )
        self.control = Control(self.control_endpoint)
        deadline = time.perf_counter() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"phalanxd exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.control.wait_all_running(timeout=0.5)
                break
            except TimeoutError:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"phalanxd not ready after {timeout:g}s:\n{self.log_tail()}") from None
        self._remember_tree()

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        proc, self.proc = self.proc, None
        if proc is not None:
            self._remember_tree(proc.pid)
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=8.0)
            except subprocess.TimeoutExpired:
                say("phalanxd ignored SIGTERM for 8 s: SIGKILL to its process group")
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            for child in self._tree.values():
                try:
                    if child.is_running():  # psutil checks pid reuse
                        child.kill()
                except psutil.Error:
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def _remember_tree(self, pid: int | None = None) -> None:
        try:
            root = psutil.Process(pid or self.pid)
            for child in root.children(recursive=True):
                self._tree[child.pid] = child
        except psutil.Error:
            pass

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------- helpers
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ctl(self) -> Control:
        assert self.control is not None
        return self.control

    def process(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def worker_processes(self) -> list[psutil.Process]:
        out = []
        for s in self.ctl.status():
            if s["pid"]:
                try:
                    out.append(psutil.Process(s["pid"]))
                except psutil.Error:
                    pass
        return out


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session: its group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU time of these processes (gone ones count 0)."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


@contextmanager
def mp_pool(workers: int) -> Iterator[multiprocessing.pool.Pool]:
    """A multiprocessing.Pool ended with close() and a bounded join(), not
    its ``__exit__``: that is terminate(), which can hang a whole run (a
    worker SIGTERMed while it holds the task queue's lock leaves the other
    blocked on that lock, and terminate() joins it forever; seen here)."""
    pool = multiprocessing.Pool(workers)
    try:
        yield pool
    finally:
        pool.close()
        joiner = threading.Thread(target=pool.join, daemon=True)
        joiner.start()
        joiner.join(60)
        if joiner.is_alive():
            for proc in pool._pool:  # type: ignore[attr-defined]
                proc.kill()  # by PID: the workers of this pool only
            say("multiprocessing.Pool did not join within 60 s: its workers were killed")
