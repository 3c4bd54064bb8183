"""supervisor.Pool against multiprocessing.Pool, ProcessPoolExecutor and loky.

    start:  Pool(4) constructed -> first apply() result, vs multiprocessing.Pool(4)
            (the platform's default start method, as a user gets it), twice:
            warm (in this process, which has made pools before: the daemon's
            code is imported) and cold (the first pool of a fresh process,
            timed from after ``import supervisor`` / ``import multiprocessing``)
    seed:   the seed's CPU-bound function over a list (map), WORKERS processes
            each, pool start-up excluded: Pool.map, multiprocessing.Pool.map,
            ProcessPoolExecutor.map (same chunksize) and loky's reusable
            executor (skipped, with a note, when loky is not installed; the
            bench target installs it: a bench-only dependency)

Rounds interleave the contenders; each figure is the median round, and the
report prints ours / theirs.
"""

from __future__ import annotations

import multiprocessing
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bench.harness import REPO, WORKERS, say
from bench.tasks import cpu, noop
from supervisor import Pool

SEED_ITEMS = 400
SEED_N = 20_000  # range per item: ~1 ms of pure-Python work


def _start_ours() -> float:
    t = time.perf_counter()
    pool = Pool(4)
    pool.apply(noop, (0,))
    took = time.perf_counter() - t
    pool.close()
    pool.join()
    return took


def _start_mp() -> float:
    t = time.perf_counter()
    pool = multiprocessing.Pool(4)
    pool.apply(noop, (0,))
    took = time.perf_counter() - t
    pool.close()
    pool.join()
    return took


_COLD = """
import time
from bench.tasks import noop
import {module} as m
t = time.perf_counter()
pool = m.Pool(4)
pool.apply(noop, (0,))
print(time.perf_counter() - t)
pool.close()
pool.join()
"""


def _start_cold(module: str) -> float:
    """The first pool of a fresh interpreter (what a script pays once)."""
    run = subprocess.run([sys.executable, "-c", _COLD.format(module=module)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True)
    return float(run.stdout.split()[0])


def _chunksize(items: int) -> int:
    size, extra = divmod(items, WORKERS * 4)  # multiprocessing.Pool.map's default
    return size + (1 if extra else 0)


def _timed_map(mapper: Callable[[list[int]], list[Any]], items: list[int]) -> float:
    t = time.perf_counter()
    out = mapper(items)
    took = time.perf_counter() - t
    assert len(out) == len(items)
    return took


def run(rounds: int) -> dict[str, Any]:
    start: dict[str, list[float]] = {"ours": [], "mp": []}
    cold: dict[str, list[float]] = {"ours": [], "mp": []}
    for _ in range(rounds):
        start["ours"].append(_start_ours())
        start["mp"].append(_start_mp())
        cold["ours"].append(_start_cold("supervisor"))
        cold["mp"].append(_start_cold("multiprocessing"))
    say(f"Pool(4) start to first result: {statistics.median(start['ours']) * 1000:.0f} ms; "
        f"multiprocessing.Pool(4): {statistics.median(start['mp']) * 1000:.0f} ms; first pool "
        f"of a fresh process: {statistics.median(cold['ours']) * 1000:.0f} ms vs "
        f"{statistics.median(cold['mp']) * 1000:.0f} ms")
    items = [SEED_N] * SEED_ITEMS
    chunk = _chunksize(len(items))
    seed: dict[str, list[float]] = {"phalanx.pool": [], "mp.pool": [], "ppe": []}
    ours = Pool(WORKERS)
    theirs = multiprocessing.Pool(WORKERS)
    ppe = ProcessPoolExecutor(WORKERS)
    loky_ex: Any = None
    note = ""
    try:
        from loky import get_reusable_executor  # bench-only dependency

        loky_ex = get_reusable_executor(max_workers=WORKERS)
        seed["loky"] = []
    except ImportError:
        note = "loky not installed: pip install loky (make bench does)"
    try:
        mappers: dict[str, Callable[[list[int]], list[Any]]] = {
            "phalanx.pool": lambda xs: ours.map(cpu, xs),
            "mp.pool": lambda xs: theirs.map(cpu, xs),
            "ppe": lambda xs: list(ppe.map(cpu, xs, chunksize=chunk)),
        }
        if loky_ex is not None:
            mappers["loky"] = lambda xs: list(loky_ex.map(cpu, xs, chunksize=chunk))
        for fn in mappers.values():
            fn(items[:WORKERS * 4])  # warm: every worker has imported bench.tasks
        for _ in range(rounds):
            for key, fn in mappers.items():
                seed[key].append(_timed_map(fn, items))
    finally:
        ours.close()
        ours.join()
        theirs.close()
        theirs.join()
        ppe.shutdown()
        if loky_ex is not None:
            loky_ex.shutdown()
    medians = {k: statistics.median(v) for k, v in seed.items() if v}
    say("seed map seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
    return {
        "start_to_first_result_s": {k: statistics.median(v) for k, v in start.items()},
        "start_rounds_s": start,
        "cold_start_to_first_result_s": {k: statistics.median(v) for k, v in cold.items()},
        "cold_start_rounds_s": cold,
        "seed_map_s": medians,
        "seed_rounds_s": seed,
        "seed_items": SEED_ITEMS,
        "seed_n": SEED_N,
        "chunksize": chunk,
        "mp_start_method": multiprocessing.get_start_method(),
        "note": note,
    }
