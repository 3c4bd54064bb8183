"""The demo's daemon side: start and stop phalanxd, track its workers.

Checks that the configured endpoints are free before starting, runs
phalanxd as a child in its own session (``DaemonProcess``), remembers every
worker process it starts (``Workers``) so the demo can prove none is left,
and stops everything fast when the demo is interrupted (``emergency_stop``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from supervisor.client import Client
from supervisor.config import Config
from supervisor.ctl import connection as ctlclient

READY_TIMEOUT = 30.0


class CannotStart(Exception):
    """The daemon cannot be started; the message says why, in one line."""


# ================================================================== preflight
def endpoint_problems(cfg: Config) -> list[str]:
    """Endpoints someone else already holds (checked before starting)."""
    problems = []
    for what, ep in (("intake", cfg.endpoints.intake), ("publisher", cfg.endpoints.publisher),
                     ("control", cfg.control_endpoint)):
        if ep.startswith("tcp://"):
            host, _, port = ep[len("tcp://"):].rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                # as libzmq does, so a port in TIME_WAIT counts as free
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host if host != "*" else "", int(port)))
                except OSError as exc:
                    problems.append(f"{what} port {port} ({ep}) is not free: {exc.strerror or exc}")
        elif ep.startswith("ipc://"):
            path = ep[len("ipc://"):]
            if os.path.exists(path):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    try:
                        s.connect(path)
                    except OSError:
                        continue  # a stale socket file; binding replaces it
                    problems.append(f"{what} socket {path} is in use (another phalanxd?)")
    return problems


# ===================================================================== daemon
class DaemonProcess:
    """phalanxd as a child in its own session, logging to a temp file."""

    def __init__(self, config_path: Path | None, cfg: Config) -> None:
        self.cfg = cfg
        self.log = tempfile.NamedTemporaryFile(prefix="phalanxd-demo-", suffix=".log", delete=False)
        exe = Path(sys.executable).with_name("phalanxd")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "supervisor"]
        if config_path is not None:
            cmd += ["--config", str(config_path)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def first_error(self) -> str:
        """The daemon's own one-line complaint, else its last log line."""
        lines = Path(self.log.name).read_text(errors="replace").splitlines()
        for line in lines:
            if line.startswith("phalanxd:"):
                return line
        return lines[-1] if lines else "(no output)"

    def wait_ready(self, client: Client) -> list[dict[str, Any]]:
        """Until ping answers and every slot is RUNNING; CannotStart if not."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CannotStart(f"phalanxd exited with code {self.proc.returncode}: "
                                  f"{self.first_error()}")
            try:
                client.ping(timeout=0.5)
                status: list[dict[str, Any]] = ctlclient.call(
                    self.cfg.control_endpoint, "status", timeout=0.5)
            except (TimeoutError, ctlclient.Unreachable, ctlclient.ControlError):
                continue
            if status and all(s["state"] == "RUNNING" for s in status):
                return status
            time.sleep(0.05)  # polling an external process; nothing to wait on
        raise CannotStart(f"phalanxd not ready within {READY_TIMEOUT:g}s; log: {self.log.name}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float) -> int | None:
        """SIGTERM (the daemon drains), wait; None if it did not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Last resort: SIGKILL the daemon's whole session/process group."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def close(self) -> None:
        self.log.close()


# ================================================================== workers
class Workers:
    """Every worker process ever seen, to prove at the end that none is left.

    A pid is recorded only while it is the daemon's descendant, as a
    psutil.Process, which remembers its start time: a recycled pid can
    neither be reported as left behind nor killed by mistake.
    """

    def __init__(self, daemon_pid: int) -> None:
        self.daemon_pid = daemon_pid
        self.seen: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()

    def remember(self, pid: int) -> None:
        with self._lock:
            if pid in self.seen:
                return
            try:
                proc = psutil.Process(pid)
                if self.daemon_pid in {p.pid for p in proc.parents()}:
                    self.seen[pid] = proc
            except psutil.Error:
                pass  # already gone: nothing to check later

    def left(self, timeout: float = 2.0) -> list[int]:
        """Those still alive (zombies awaiting a reaper do not count)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                procs = list(self.seen.values())
            alive = [p.pid for p in procs if _alive(p)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)  # orphans may take a moment to be reaped

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self.seen.values())
        for proc in procs:
            try:
                proc.kill()  # psutil checks the start time first
            except psutil.Error:
                pass


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ====================================================================== stop
def emergency_stop(daemon: DaemonProcess, workers: Workers) -> None:
    """Interrupted or failed: stop the daemon fast, whatever it was doing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
    for proc in daemon.descendants():
        workers.remember(proc.pid)
    # First SIGTERM drains, second stops at once; then no more asking.
    if daemon.stop(2.0) is None and daemon.stop(daemon.cfg.shutdown.stop_timeout + 2) is None:
        daemon.kill()
    workers.kill_all()
