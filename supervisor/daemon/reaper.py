"""Orphans: processes a task started that outlive their worker.

A task may fork and its children may call setsid(), leaving the worker's
process group, so killpg on the worker misses them; when the worker dies
they would be re-parented to init and live on. The daemon therefore makes
itself a *child subreaper* (Linux prctl): orphans of any descendant are
re-parented to the daemon instead. Every direct child of the daemon that
is not one of its own (the forkserver, the resource tracker, a worker
started with the spawn/fork method) is such an orphan: it is killed, and
once dead it is reaped, so no zombie is ever left behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

import psutil

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Ask Linux to re-parent orphaned descendants to us; False if unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def multiprocessing_helpers() -> set[int]:
    """Pids of the forkserver and resource tracker multiprocessing started."""
    pids: set[int] = set()
    try:
        from multiprocessing import forkserver, resource_tracker

        for pid in (
            getattr(forkserver._forkserver, "_forkserver_pid", None),
            getattr(resource_tracker._resource_tracker, "_pid", None),
        ):
            if pid:
                pids.add(pid)
    except ImportError:
        pass
    return pids


def child_pids() -> list[int]:
    """Our direct children, cheaply: Linux lists each thread's children in
    /proc/self/task/TID/children, so there is no need to scan all of /proc
    (psutil's way, milliseconds on a busy host, on the loop's time)."""
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
    except OSError:
        return [p.pid for p in psutil.Process().children()]
    return pids


def reap_orphans(keep: set[int]) -> int:
    """SIGKILL and reap direct children whose pid is not in ``keep``.

    Returns how many orphans were found.
    """
    found = 0
    for pid in child_pids():
        if pid in keep:
            continue
        found += 1
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if already dead
            if not done:
                os.kill(pid, signal.SIGKILL)  # reaped on the next pass
        except (ChildProcessError, ProcessLookupError):
            pass
    return found
