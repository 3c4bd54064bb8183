"""The same SIGKILL under multiprocessing.Pool and ProcessPoolExecutor.

Each experiment runs in a child process of its own session, because these
pools can deadlock for good after a kill: a Pool worker waiting for work
holds the shared task queue's read lock, and killed while holding it, it
never releases it; every other worker, and ``Pool.terminate()`` itself,
then block on that lock forever. The parent gives each experiment a
deadline, reads one JSON line from it, and SIGKILLs its whole process group
afterwards whatever happened.

    python -m bench.alt_crash pool-respawn|pool-in-flight|ppe-in-flight ANSWER.json
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench import tasks
from bench.harness import REPO, WORKERS, say
from bench.stats import scaled, summary

HOLD = 0.5


def pool_respawn() -> dict[str, Any]:
    """Kill one idle Pool worker; ms until its replacement is in pool._pool,
    then whether the pool still runs work (within 2 s)."""
    pool = multiprocessing.Pool(WORKERS)
    pool.map(tasks.noop, range(10))
    time.sleep(0.05)  # both workers idle, blocked on the task queue
    procs = list(pool._pool)  # type: ignore[attr-defined]
    old = {p.pid for p in procs}
    t0 = time.perf_counter()
    os.kill(procs[0].pid, signal.SIGKILL)
    while not any(p.pid not in old for p in list(pool._pool)):  # type: ignore[attr-defined]
        if time.perf_counter() - t0 > 5.0:
            return {"respawn_ms": None, "healthy": False}
        time.sleep(0.0001)
    respawn = (time.perf_counter() - t0) * 1e3
    try:
        pool.map_async(tasks.noop, range(10)).get(timeout=2.0)
        healthy = True
    except multiprocessing.TimeoutError:
        healthy = False
    return {"respawn_ms": respawn, "healthy": healthy}


def pool_in_flight() -> dict[str, Any]:
    pool = multiprocessing.Pool(WORKERS)
    pool.map(tasks.noop, range(10))
    results = [pool.apply_async(tasks.sleep, (HOLD,)) for _ in range(WORKERS)]
    time.sleep(HOLD / 5)  # each worker is inside one sleep
    os.kill(pool._pool[0].pid, signal.SIGKILL)  # type: ignore[attr-defined]
    time.sleep(HOLD + 2.0)
    return {"tasks": len(results), "lost": sum(1 for r in results if not r.ready()),
            "waited_s": HOLD + 2.0}


def ppe_in_flight() -> dict[str, Any]:
    ex = ProcessPoolExecutor(WORKERS)
    list(ex.map(tasks.noop, range(10)))
    futures = [ex.submit(tasks.sleep, HOLD) for _ in range(WORKERS * 2)]
    time.sleep(HOLD / 5)
    os.kill(next(iter(ex._processes)), signal.SIGKILL)
    broken = 0
    for f in futures:
        try:
            f.result(timeout=HOLD + 5.0)
        except Exception as exc:  # noqa: BLE001 - counting which exception each future raised
            broken += type(exc).__name__ == "BrokenProcessPool"
    return {"tasks": len(futures), "broken": broken}


EXPERIMENTS = {"pool-respawn": pool_respawn, "pool-in-flight": pool_in_flight,
               "ppe-in-flight": ppe_in_flight}


def run_child(name: str, timeout: float = 20.0) -> dict[str, Any]:
    """Run one experiment in its own session; always kill that session after.

    The answer comes through a file, not a pipe: the experiment's pool
    workers outlive it and would hold a pipe open.
    """
    with tempfile.TemporaryDirectory(prefix="phalanx-bench-alt-") as tmp:
        answer = Path(tmp) / "answer.json"
        proc = subprocess.Popen([sys.executable, "-m", "bench.alt_crash", name, str(answer)],
                                cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
            return json.loads(answer.read_text())  # type: ignore[no-any-return]
        except subprocess.TimeoutExpired:
            return {"error": f"no answer within {timeout:g}s (deadlocked)"}
        except (OSError, ValueError):
            return {"error": f"no result (exit {proc.returncode})"}
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the experiment's pool workers too
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()


def run(reps: int) -> dict[str, Any]:
    respawns = [run_child("pool-respawn") for _ in range(reps)]
    times = [r["respawn_ms"] for r in respawns if r.get("respawn_ms") is not None]
    deadlocked = sum(1 for r in respawns if not r.get("healthy"))
    say(f"Pool: idle worker killed {reps} times: respawn p50 "
        f"{scaled(summary(times), 1.0, 2).get('p50')} ms; pool deadlocked afterwards {deadlocked}/{reps}")
    pool = run_child("pool-in-flight")
    ppe = run_child("ppe-in-flight")
    in_flight = {
        "multiprocessing.Pool": (
            f"{pool['lost']} of {pool['tasks']} in-flight tasks never completed (waited {pool['waited_s']:g} s);"
            " the killed worker is replaced but its task is lost: get() blocks forever"
            if "lost" in pool else pool["error"]),
        "ProcessPoolExecutor": (
            f"{ppe['broken']} of {ppe['tasks']} submitted tasks failed with BrokenProcessPool;"
            " the executor is unusable afterwards" if "broken" in ppe else ppe["error"]),
        "multiprocessing.Pool, idle worker killed": (
            f"replaced in p50 {scaled(summary(times), 1.0, 2).get('p50')} ms, but the pool then ran no "
            f"more work (deadlocked on its task-queue lock) in {deadlocked} of {reps} tries"),
    }
    return {
        "pool_respawn": scaled(summary(times), 1.0, 3),
        "pool_respawn_note": "multiprocessing.Pool, idle worker SIGKILLed: ms until a new process "
                             "is in pool._pool (fresh pool per try)",
        "pool_deadlocked_after_idle_kill": f"{deadlocked}/{reps}",
        "pool_in_flight": pool,
        "ppe_in_flight": ppe,
        "in_flight": in_flight,
    }


if __name__ == "__main__":
    result = EXPERIMENTS[sys.argv[1]]()
    Path(sys.argv[2]).write_text(json.dumps(result))
    os._exit(0)  # never wait on a pool that may be deadlocked
