"""No-op throughput: N tasks through each contender, tasks per second.

Every variant runs the same ``bench.tasks.noop(i)`` for i in range(N) on
two worker processes, after a short warm-up on the same pool, and times
only submission through the last result. It also records the CPU seconds
each party spent (this process, which holds the client or the pool's
feeder/result threads; phalanxd's main process; the workers), which shows
where the time goes when a figure disappoints.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import psutil

from bench import tasks
from bench.harness import (
    NOOP,
    WORKERS,
    PhalanxUnderTest,
    cpu_seconds,
    mp_pool,
    say,
    self_cpu_seconds,
)
from supervisor.client import Client

WARMUP = 1000


@dataclass
class Sample:
    seconds: float
    cpu_client: float
    cpu_daemon: float
    cpu_workers: float


class _Meter:
    """CPU seconds of the three parties across the timed section."""

    def __init__(self, daemon: psutil.Process | None, workers: list[psutil.Process]) -> None:
        self.daemon = [daemon] if daemon else []
        self.workers = workers

    def __enter__(self) -> _Meter:  # noqa: PYI034 - private, never subclassed
        self.c0 = self_cpu_seconds()
        self.d0 = cpu_seconds(self.daemon)
        self.w0 = cpu_seconds(self.workers)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.t1 = time.perf_counter()
        self.sample = Sample(
            self.t1 - self.t0,
            self_cpu_seconds() - self.c0,
            cpu_seconds(self.daemon) - self.d0,
            cpu_seconds(self.workers) - self.w0,
        )


def _expect(got: int, n: int, what: str) -> None:
    if got != n:
        raise RuntimeError(f"{what}: {got} results for {n} tasks")


# ------------------------------------------------------------------ phalanx
def phalanx_submit(d: PhalanxUnderTest, n: int, endpoint: str | None = None) -> Sample:
    with Client(endpoint or d.intake) as c:
        c.ping()
        for f in [c.submit(NOOP, i) for i in range(WARMUP)]:
            f.result()
        with _Meter(d.process(), d.worker_processes()) as m:
            futures = [c.submit(NOOP, i) for i in range(n)]
            for f in futures:
                f.result()
    return m.sample


def phalanx_submit_tcp(d: PhalanxUnderTest, n: int) -> Sample:
    """The same over loopback TCP, the default endpoint users configure."""
    return phalanx_submit(d, n, d.tcp_intake)


def phalanx_map(d: PhalanxUnderTest, n: int) -> Sample:
    with Client(d.intake) as c:
        c.ping()
        c.map(NOOP, range(WARMUP))
        with _Meter(d.process(), d.worker_processes()) as m:
            got = len(c.map(NOOP, range(n)))
    _expect(got, n, "phalanx map")
    return m.sample


def phalanx_imap_unordered(d: PhalanxUnderTest, n: int) -> Sample:
    with Client(d.intake) as c:
        c.ping()
        for _ in c.imap_unordered(NOOP, range(WARMUP)):
            pass
        with _Meter(d.process(), d.worker_processes()) as m:
            got = 0
            for _ in c.imap_unordered(NOOP, range(n)):
                got += 1
    _expect(got, n, "phalanx imap_unordered")
    return m.sample


# ------------------------------------------------------------ alternatives
def _children() -> list[psutil.Process]:
    return psutil.Process().children()


def _pool_imap(chunksize: int) -> Callable[[PhalanxUnderTest, int], Sample]:
    def run(d: PhalanxUnderTest, n: int) -> Sample:
        with mp_pool(WORKERS) as pool:
            for _ in pool.imap_unordered(tasks.noop, range(WARMUP), chunksize=chunksize):
                pass
            with _Meter(None, _children()) as m:
                got = 0
                for _ in pool.imap_unordered(tasks.noop, range(n), chunksize=chunksize):
                    got += 1
        _expect(got, n, f"Pool.imap_unordered(chunksize={chunksize})")
        return m.sample

    return run


def ppe_submit(d: PhalanxUnderTest, n: int) -> Sample:
    with ProcessPoolExecutor(WORKERS) as ex:
        for f in [ex.submit(tasks.noop, i) for i in range(WARMUP)]:
            f.result()
        with _Meter(None, _children()) as m:
            futures = [ex.submit(tasks.noop, i) for i in range(n)]
            for f in futures:
                f.result()
    return m.sample


def ppe_map(d: PhalanxUnderTest, n: int) -> Sample:
    with ProcessPoolExecutor(WORKERS) as ex:
        for _ in ex.map(tasks.noop, range(WARMUP), chunksize=64):
            pass
        with _Meter(None, _children()) as m:
            got = 0
            for _ in ex.map(tasks.noop, range(n), chunksize=64):
                got += 1
    _expect(got, n, "ProcessPoolExecutor.map(chunksize=64)")
    return m.sample


VARIANTS: dict[str, Callable[[PhalanxUnderTest, int], Sample]] = {
    "phalanx.submit": phalanx_submit,
    "phalanx.submit.tcp": phalanx_submit_tcp,
    "phalanx.map": phalanx_map,
    "phalanx.imap_unordered": phalanx_imap_unordered,
    "pool.imap_unordered.c1": _pool_imap(1),
    "pool.imap_unordered.c64": _pool_imap(64),
    "ppe.submit": ppe_submit,
    "ppe.map.c64": ppe_map,
}

LABELS = {
    "phalanx.submit": "Phalanx submit() per task",
    "phalanx.submit.tcp": "Phalanx submit() per task over loopback TCP",
    "phalanx.map": "Phalanx map()",
    "phalanx.imap_unordered": "Phalanx imap_unordered()",
    "pool.imap_unordered.c1": "Pool.imap_unordered(chunksize=1)",
    "pool.imap_unordered.c64": "Pool.imap_unordered(chunksize=64)",
    "ppe.submit": "ProcessPoolExecutor.submit() per task",
    "ppe.map.c64": "ProcessPoolExecutor.map(chunksize=64)",
}


def run(d: PhalanxUnderTest, n: int, rounds: int) -> dict[str, object]:
    """Every variant, ``rounds`` times, interleaved (order rotates per round)."""
    names = list(VARIANTS)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    rss: dict[str, list[float]] = {name: [] for name in names}  # phalanxd's, after each run
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            s = VARIANTS[name](d, n)
            samples[name].append(s)
            rss[name].append(round(d.process().memory_info().rss / 2**20, 1))
            say(f"throughput round {r + 1}/{rounds} {name:24s} {n / s.seconds:>11,.0f} tasks/s"
                f"  (cpu us/task: client {s.cpu_client / n * 1e6:.1f}, daemon"
                f" {s.cpu_daemon / n * 1e6:.1f}, workers {s.cpu_workers / n * 1e6:.1f})")
    out: dict[str, object] = {}
    for name, ss in samples.items():
        rates = sorted(n / s.seconds for s in ss)
        best = min(ss, key=lambda s: s.seconds)
        out[name] = {
            "label": LABELS[name],
            "tasks": n,
            "rates": [round(n / s.seconds, 1) for s in ss],
            "best": round(rates[-1], 1),
            "median": round(statistics.median(rates), 1),
            "phalanxd_rss_mib_after_each_round": rss[name],
            "cpu_us_per_task_best_round": {
                "client_process": round(best.cpu_client / n * 1e6, 2),
                "daemon": round(best.cpu_daemon / n * 1e6, 2),
                "workers": round(best.cpu_workers / n * 1e6, 2),
            },
        }
    return out
