"""numpy payloads: Phalanx against multiprocessing.Pool and ProcessPoolExecutor.

    round_trip_100mb  one 100 MB float64 array to a worker and back
                      (workers.arrays:roundtrip): Phalanx over its ipc intake
                      (shared memory), and supervisor.Pool.apply (a private
                      pool: pickle with the array out of band, in shared
                      memory), vs Pool.apply (pickle through pipes)
    reduction         np.sum over 64 chunks of 2 MiB, results summed:
                      Client.map and supervisor.Pool.map vs Pool.map vs
                      ProcessPoolExecutor.map
    inline_8mb        an 8 MB array both ways with shared memory turned off
                      (PHALANX_SHM=0: what a remote client pays, the
                      array inside the MessagePack message) vs the same
                      through shared memory and Pool.apply
    encode_copy       what putting the bytes in the message costs the sender
                      (the copy extra ZeroMQ frames would save), per MB

Every variant runs ``rounds`` times, interleaved; the figure is the best
round (seconds), with the median beside it.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from bench.harness import WORKERS, PhalanxUnderTest, say
from supervisor import Pool
from supervisor.client import Client
from workers import arrays

MB = 1_000_000
BIG = 100 * MB
CHUNKS = 64
CHUNK = 2 * 1024 * 1024  # bytes per reduction chunk
INLINE = 8 * MB


def _client(d: PhalanxUnderTest, shm: bool) -> Client:
    old = os.environ.get("PHALANX_SHM")
    os.environ["PHALANX_SHM"] = "1" if shm else "0"
    try:
        return Client(d.intake)
    finally:
        if old is None:
            del os.environ["PHALANX_SHM"]
        else:
            os.environ["PHALANX_SHM"] = old


def _timed(fn: Callable[[], Any], check: Callable[[Any], bool], what: str) -> float:
    t0 = time.perf_counter()
    got = fn()
    seconds = time.perf_counter() - t0
    if not check(got):
        raise AssertionError(f"{what}: wrong result")
    return seconds


def _rounds(variants: dict[str, Callable[[], float]], rounds: int, section: str
            ) -> dict[str, dict[str, Any]]:
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(variants[name]())
            say(f"{section} round {r + 1}/{rounds} {name:28s} {times[name][-1] * 1e3:9.1f} ms")
    return {n: {"best": round(min(t), 5), "median": round(statistics.median(t), 5),
                "seconds": [round(x, 5) for x in t]} for n, t in times.items()}


def run(d: PhalanxUnderTest, rounds: int) -> dict[str, Any]:
    big = np.random.default_rng(0).standard_normal(BIG // 8)
    chunks = [np.random.default_rng(i).standard_normal(CHUNK // 8) for i in range(CHUNKS)]
    expect = float(sum(float(np.sum(c)) for c in chunks))
    small = np.random.default_rng(2).standard_normal(INLINE // 8)
    shm_client, inline_client = _client(d, True), _client(d, False)
    pool = multiprocessing.Pool(WORKERS)
    ppe = ProcessPoolExecutor(WORKERS)
    ours = Pool(WORKERS)
    try:
        # Warm up every contender once (imports, first mappings).
        shm_client.call("workers.arrays:total", small)
        inline_client.call("workers.arrays:total", small)
        pool.apply(arrays.total, (small,))
        ours.map(arrays.total, [small] * WORKERS * 2, chunksize=1)
        ppe.submit(arrays.total, small).result()

        def same(x: Any, ref: Any = big) -> bool:
            return bool(x.shape == ref.shape and np.array_equal(x, ref))

        def near(x: Any) -> bool:
            return abs(sum(x) - expect) < 1e-6 * max(1.0, abs(expect))

        out: dict[str, Any] = {}
        out["round_trip_100mb"] = _rounds({
            "phalanx.call": lambda: _timed(
                lambda: shm_client.call("workers.arrays:roundtrip", big), same, "phalanx"),
            "phalanx.pool.apply": lambda: _timed(
                lambda: ours.apply(arrays.roundtrip, (big,)), same, "phalanx pool"),
            "pool.apply": lambda: _timed(
                lambda: pool.apply(arrays.roundtrip, (big,)), same, "pool"),
        }, rounds, "array 100 MB")
        out["reduction"] = _rounds({
            "phalanx.map": lambda: _timed(
                lambda: shm_client.map("workers.arrays:total", chunks), near, "phalanx"),
            "phalanx.map.inline": lambda: _timed(
                lambda: inline_client.map("workers.arrays:total", chunks), near, "inline"),
            "phalanx.pool.map": lambda: _timed(
                lambda: ours.map(arrays.total, chunks), near, "phalanx pool"),
            "pool.map": lambda: _timed(lambda: pool.map(arrays.total, chunks), near, "pool"),
            "ppe.map": lambda: _timed(lambda: list(ppe.map(arrays.total, chunks)), near, "ppe"),
        }, rounds, "reduction")
        out["inline_8mb"] = _rounds({
            "phalanx.inline": lambda: _timed(
                lambda: inline_client.call("workers.arrays:roundtrip", small),
                lambda x: same(x, small), "inline"),
            "phalanx.shm": lambda: _timed(
                lambda: shm_client.call("workers.arrays:roundtrip", small),
                lambda x: same(x, small), "shm"),
            "pool.apply": lambda: _timed(
                lambda: pool.apply(arrays.roundtrip, (small,)), lambda x: same(x, small), "pool"),
        }, rounds, "8 MB")
        from supervisor.client.wire import encoder

        t0 = time.perf_counter()
        for _ in range(5):
            encoder.encode([small])
        out["encode_copy"] = {"ms_per_mb": round((time.perf_counter() - t0) / 5 / (INLINE / MB)
                                                 * 1e3, 4)}
        return out
    finally:
        shm_client.terminate()
        inline_client.terminate()
        pool.terminate()
        pool.join()
        ours.terminate()
        ppe.shutdown(cancel_futures=True)
