"""A private phalanxd: the same daemon, started for one Pool and gone with it.

    owner (Pool) --stdin: spec JSON, then held open--> python -m supervisor.daemon.private_entry
          <-- ready pipe: "ready" once bound ------    phalanxd loop (same code)
          --- ipc://<0700 temp dir>/intake ---------->   + workers (tasks.accept_pickle)

No config file: the Config is built here (``private_config``). Endpoints are
ipc sockets in a fresh 0700 directory, so only this user can reach them
(the same trust as multiprocessing's own pipes, which is why pickle may
travel here). The child is in its own session (a Ctrl-C in the terminal is
for the owner, not for its pool) and stops when the owner closes its stdin,
or when the owner dies without closing: the kernel closes the pipe even
after SIGKILL (see supervisor/daemon/private_entry.py). ``atexit`` stops every pool still running.
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import msgspec
import psutil

from supervisor import config as config_mod
from supervisor.errors import StartupError

# Bounds on every wait here (seconds).
START_TIMEOUT = 30.0  # spawn to "ready" (interpreter start, imports, bind)
STOP_GRACE = 1.0  # in-flight tasks after the owner stops the pool (drain)
WORKER_STOP = 1.0  # a worker's SIGTERM -> SIGKILL
STOP_TIMEOUT = 10.0  # stdin closed -> daemon exited; then SIGKILL
# Largest message (bytes): a pickled call or result of a private pool.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
# Environment a private daemon must not inherit from its owner: systemd's
# notify socket would make it report READY/STOPPING as if it were the owner.
_SCRUB_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "PHALANX_CONFIG",
              "PHALANX_RUNTIME_DIR", "LISTEN_FDS", "LISTEN_PID")

_LIVE: weakref.WeakSet[PrivateDaemon] = weakref.WeakSet()


def private_config(directory: Path, processes: int, maxtasksperchild: int | None,
                   start_method: str = "forkserver") -> config_mod.Config:
    return msgspec.convert({
        "daemon": {"runtime_dir": str(directory / "run"), "log_level": "warning",
                   "log_format": "console"},
        # Preloaded in the fork server: every worker starts with the pickle
        # lane (and cloudpickle, when installed) already imported.
        "workers": {"count": processes, "start_method": start_method,
                    "preload": ["workers.pickle_lane",
                                *(["cloudpickle"] if _has_cloudpickle() else [])],
                    "max_tasks_per_worker": maxtasksperchild or 0, "recycle_jitter": 0.0},
        "endpoints": {"intake": f"ipc://{directory}/intake",
                      "publisher": f"ipc://{directory}/pub",
                      "control": f"ipc://{directory}/run/control"},
        "tasks": {"allow": [], "accept_pickle": True,
                  "max_message_bytes": MAX_MESSAGE_BYTES},
        "shutdown": {"grace": STOP_GRACE, "stop_timeout": WORKER_STOP},
        # A private pool lives and dies with its owner: nothing to replay,
        # and a journal on disk would be shared between pools.
        "journal": {"enabled": False},
    }, config_mod.Config)


def _has_cloudpickle() -> bool:
    import importlib.util

    return importlib.util.find_spec("cloudpickle") is not None


def _short_tempdir() -> Path:
    # An ipc path must fit in sun_path (~107 bytes).
    base = tempfile.gettempdir()
    if len(base) > 60:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="phalanx-pool-", dir=base))  # mode 0700


class PrivateDaemon:
    """One private phalanxd child process and its directory."""

    def __init__(self, processes: int, maxtasksperchild: int | None = None,
                 start_method: str = "forkserver",
                 on_death: Callable[[int], None] | None = None) -> None:
        self.dir = _short_tempdir()
        self.config = private_config(self.dir, processes, maxtasksperchild, start_method)
        self.intake = self.config.endpoints.intake
        self.control = self.config.control_endpoint
        self._lock = threading.Lock()
        self.stopping = False
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
        from supervisor.daemon.private_entry import Spec

        ready_r, ready_w = os.pipe()
        spec = msgspec.json.encode(
            Spec(self.config, list(sys.path), os.getpid(), ready_w)) + b"\n"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor.daemon.private_entry"],
                stdin=subprocess.PIPE, env=env, pass_fds=(ready_w,),
                start_new_session=True,
            )
        except OSError:
            os.close(ready_r)
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        finally:
            os.close(ready_w)
        _LIVE.add(self)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(spec)
            self.proc.stdin.flush()
            self._wait_ready(ready_r)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(ready_r)
        if on_death is not None:
            threading.Thread(target=self._watch, args=(on_death,), name="phalanx-pool-watch",
                             daemon=True).start()

    def _watch(self, on_death: Callable[[int], None]) -> None:
        """Report a death nobody asked for (an OOM kill of the daemon, say),
        so that what waits on it fails instead of hanging."""
        code = self.proc.wait()
        if not self.stopping:
            on_death(code)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, fd: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        got = b""
        while b"\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartupError(f"private phalanxd gave no ready line within {START_TIMEOUT}s")
            readable, _, _ = select.select([fd], [], [], left)
            if readable:
                chunk = os.read(fd, 64)
                if not chunk:
                    code = self.proc.wait(STOP_TIMEOUT)
                    raise StartupError(f"private phalanxd exited with code {code} while starting")
                got += chunk

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Close its stdin (it drains and stops its workers), wait at most
        ``timeout``, then SIGKILL it and whatever it started. Idempotent."""
        self.stopping = True
        with self._lock:
            procs = self._tree()
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass  # the daemon already gone: broken pipe on flush
            try:
                code: int | None = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
            for proc in procs:  # anything still there after the bounded wait
                try:
                    proc.send_signal(signal.SIGKILL)
                except psutil.Error:
                    pass
            if code is None:
                self.proc.kill()
                code = self.proc.wait(STOP_TIMEOUT)
            _wait_gone(procs, STOP_TIMEOUT)
            shutil.rmtree(self.dir, ignore_errors=True)
            _LIVE.discard(self)
            return code

    def _tree(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    """Until each process is gone (a zombie counts: it runs nothing and its
    new parent reaps it), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not all(_gone(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.005)


@atexit.register
def _stop_all() -> None:
    """The owner exits without closing its pools: stop them, no process left."""
    for daemon in list(_LIVE):
        daemon.stop()
