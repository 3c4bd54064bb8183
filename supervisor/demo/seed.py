"""The demo's Pool part: the seed's multiprocessing code on supervisor.Pool
(as the README opens), with a worker SIGKILLed while it runs part of a map.

Judged like the rest of the demo: every result right, the killed worker
replaced, and no process of the private pool left once it is closed.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil

from supervisor import Pool

ITEMS = 2000
KILL_WAIT = 10.0  # seconds to find a worker in the middle of a chunk


def function_name(x: int, y: int = 1) -> int:
    time.sleep(0.001)  # stands for the seed's CPU or numpy work
    return x * y


def _busy_worker(pool: Pool) -> int | None:
    deadline = time.monotonic() + KILL_WAIT
    while time.monotonic() < deadline:
        for slot in pool.workers():
            if slot["state"] == "RUNNING" and slot.get("current"):
                return int(slot["pid"])
        time.sleep(0.005)
    return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def run() -> dict[str, Any]:
    started = time.monotonic()
    pool = Pool(processes=4)
    try:
        result = pool.apply_async(function_name, args=(2, 3))
        results = pool.map(function_name, [2, 3, 4])
        root = psutil.Process(pool.daemon_pid)
        procs = [root, *root.children(recursive=True)]
        pending = pool.map_async(function_name, range(ITEMS), chunksize=25)
        victim = _busy_worker(pool)
        if victim is not None:
            os.kill(victim, signal.SIGKILL)
        values = pending.get(timeout=120)
        replaced = victim is not None and victim not in pool.worker_pids()
        procs += [p for p in root.children(recursive=True) if p not in procs]
    finally:
        pool.close()
        pool.join()
    left = [p.pid for p in procs if _alive(p)]
    right = result.get() == 6 and results == [2, 3, 4] and values == list(range(ITEMS))
    return {"items": ITEMS, "results_right": right, "killed_mid_task": victim,
            "replaced": replaced, "processes_left": left,
            "seconds": round(time.monotonic() - started, 3),
            "ok": right and victim is not None and replaced and not left}


def render(p: dict[str, Any]) -> list[str]:
    return [
        "", f"supervisor.Pool, the seed's code (Pool(processes=4), apply_async, map) with "
            f"a worker SIGKILLed mid-map of {p['items']} items:",
        f"  {'results right':<20}{p['results_right']!s:>8}",
        f"  {'killed mid-task':<20}{p['killed_mid_task']!s:>8}   pid, replaced: {p['replaced']}",
        f"  {'processes left':<20}{len(p['processes_left']):>8}   after close() and join() "
        f"({p['seconds']:.2f}s in all)",
    ]
