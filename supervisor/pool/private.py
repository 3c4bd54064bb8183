"""A private phalanxd: the same daemon, started for one Pool and gone with it.

    owner (Pool) --stdin: held open--------------> fork of the owner (run_forked)
          <-- ready pipe: "ready" once bound ---     or python -m supervisor.daemon.private_entry
          --- ipc://<0700 temp dir>/intake ---->   phalanxd loop (same code)
                                                     + workers (tasks.accept_pickle)

How it starts follows multiprocessing's start method, so that a Pool costs
and behaves like the multiprocessing.Pool it replaces. "fork" (Linux's
default before Python 3.14): the daemon is a fork of the owner and forks
its workers, so nothing is imported twice and no interpreter starts;
workers see the owner's modules as they were at ``Pool()``, as with
multiprocessing's fork. "spawn"/"forkserver": a fresh interpreter runs the
daemon and its workers come from a fork server, so nothing of the owner's
state (threads, a GPU context, big memory) reaches them, at the price of
two interpreter starts and the daemon's imports.

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
import traceback
import weakref
from collections.abc import Callable
from multiprocessing import util as _mp_util  # noqa: F401 - see _stop_all
from pathlib import Path
from typing import IO, TYPE_CHECKING

import msgspec

from supervisor import config as config_mod
from supervisor.errors import StartupError

if TYPE_CHECKING:
    import psutil

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
    """``start_method`` is the Pool's: "fork" forks workers from the (forked)
    daemon, anything else starts them from a fork server."""
    start_method = "fork" if start_method == "fork" else "forkserver"
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
        ready_r, ready_w = os.pipe()
        try:
            self.proc: subprocess.Popen[bytes] | ForkedDaemon = (
                ForkedDaemon(self.config, ready_w) if start_method == "fork"
                else self._exec(ready_w))
        except OSError:
            os.close(ready_r)
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        finally:
            os.close(ready_w)
        _LIVE.add(self)
        try:
            self._wait_ready(ready_r)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(ready_r)
        if on_death is not None:
            threading.Thread(target=self._watch, args=(on_death,), name="phalanx-pool-watch",
                             daemon=True).start()

    def _exec(self, ready_w: int) -> subprocess.Popen[bytes]:
        """A fresh interpreter runs the daemon; its config on its stdin."""
        from supervisor.daemon.private_entry import Spec

        env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.daemon.private_entry"],
            stdin=subprocess.PIPE, env=env, pass_fds=(ready_w,), start_new_session=True)
        assert proc.stdin is not None
        try:
            proc.stdin.write(msgspec.json.encode(
                Spec(self.config, list(sys.path), os.getpid(), ready_w)) + b"\n")
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: _wait_ready reports its exit code
        return proc

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
        # Imported here, not with this module: a Pool that starts its daemon
        # by exec never needs psutil before it stops (~18 ms of its start).
        import psutil

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
        import psutil

        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []


def _gone(proc: psutil.Process) -> bool:
    import psutil

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


_WAIT_SLICE = 0.05  # seconds: ForkedDaemon.wait re-checks at least this often


class ForkedDaemon:
    """The private daemon as a fork of this process, with the part of
    ``subprocess.Popen`` that PrivateDaemon uses (pid, stdin, poll, wait,
    kill). Its exit is watched through a pidfd, which no other process
    holds, unlike a pipe the daemon's own forked workers would inherit."""

    def __init__(self, cfg: config_mod.Config, ready_w: int) -> None:
        # Imported here, once per owner, not in each forked daemon: the
        # second Pool() of a process is then a fork and a bind.
        import supervisor.daemon.daemon
        import supervisor.daemon.main  # noqa: F401
        import workers.loop
        import workers.pickle_lane  # noqa: F401
        from supervisor.daemon import private_entry

        stdin_r, stdin_w = os.pipe()
        owner = os.getpid()
        for stream in (sys.stdout, sys.stderr):  # or the child writes them again
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        pid = os.fork()
        if pid == 0:  # the daemon: never returns into the owner's code
            code = 70
            try:
                code = private_entry.run_forked(cfg, owner, stdin_r, ready_w, _SCRUB_ENV)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported, then this process ends
                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                os._exit(code)
        os.close(stdin_r)
        self.pid = pid
        self.stdin: IO[bytes] | None = os.fdopen(stdin_w, "wb")
        self.returncode: int | None = None
        self._reap = threading.Lock()
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:  # a kernel older than 5.3: wait() polls instead
            self._pidfd = -1

    def poll(self) -> int | None:
        with self._reap:  # one waitpid at a time: two would race for the status
            if self.returncode is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
                    if self._pidfd >= 0:
                        os.close(self._pidfd)
                        self._pidfd = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"private phalanxd {self.pid}", timeout or 0.0)
            # In slices: another thread that reaps it closes the pidfd, and
            # its number may be reused before this select starts.
            step = _WAIT_SLICE if left is None else min(left, _WAIT_SLICE)
            fd = self._pidfd
            if fd < 0:
                time.sleep(step)
                continue
            try:
                select.select([fd], [], [], step)  # readable once it has exited
            except (OSError, ValueError):
                pass  # closed by the thread that reaped it: poll() says so
        return code

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@atexit.register
def _stop_all() -> None:
    """The owner exits without closing its pools: stop them, no process left.

    Registered after multiprocessing's own exit function (imported above),
    so it runs before it (atexit is last in, first out)."""
    for daemon in list(_LIVE):
        daemon.stop()
