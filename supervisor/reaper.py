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
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
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


def reap_orphans(keep: set[int]) -> int:
    """SIGKILL and reap direct children whose pid is not in ``keep``.

    Returns how many orphans were found.
    """
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return 0
    found = 0
    for child in children:
        if child.pid in keep:
            continue
        found += 1
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                child.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
        try:
            os.waitpid(child.pid, os.WNOHANG)  # reaps it if already dead
        except ChildProcessError:
            pass
    return found
