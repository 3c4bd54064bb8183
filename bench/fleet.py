"""Many hosts on one machine: three 1-worker daemons against one 3-worker
daemon, and how fast a dead daemon's tasks run elsewhere.

    throughput   Client over 3 daemons x 1 worker (credit routing)
                 vs Client over 1 daemon x 3 workers (the one-daemon path),
                 loopback TCP, rounds interleaved, best round each; two
                 task kinds: sleep(5 ms), where capacity decides, and
                 noop, where round trips and credit decide
    failover     3 daemons x 1 worker, dead_after 0.5 s, a stream of
                 stamp_and_sleep(50 ms) tasks; SIGKILL one daemon (its
                 process group, its workers by pid) while it runs a task;
                 time from the kill to the client handing its tasks over
                 (resubmitted rises) and to that running task starting on
                 another daemon's worker (its stamp file)

Run alone: ``python -m bench.fleet [--quick]``; ``make bench`` runs it too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

from bench.harness import PhalanxUnderTest, say
from supervisor.client import Client

SLEEP = "bench.tasks:sleep"
NOOP = "bench.tasks:noop"
STAMP_AND_SLEEP = "bench.tasks:stamp_and_sleep"
DEAD_AFTER = 0.5
# Bounds on every wait here: a run that hangs is a failure, not a stall.
READY_TIMEOUT = 30.0
RESULT_TIMEOUT = 120.0


def _until(what: str, predicate: Callable[[], object], timeout: float = READY_TIMEOUT,
           interval: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


def _rate(c: Client, task: str, arg: Any, n: int) -> float:
    for f in [c.submit(task, arg) for _ in range(min(n, 100))]:  # warm up: credit, speed
        f.result(RESULT_TIMEOUT)
    t0 = time.perf_counter()
    futs = [c.submit(task, arg) for _ in range(n)]
    for f in futs:
        f.result(RESULT_TIMEOUT)
    return n / (time.perf_counter() - t0)


def throughput(n_sleep: int, n_noop: int, rounds: int) -> dict[str, Any]:
    with ExitStack() as stack:
        three = [stack.enter_context(PhalanxUnderTest(workers=1)) for _ in range(3)]
        one = stack.enter_context(PhalanxUnderTest(workers=3))
        variants: dict[str, Callable[[], Client]] = {
            "three_by_one": lambda: Client([d.tcp_intake for d in three], dead_after=DEAD_AFTER),
            "one_by_three": lambda: Client(one.tcp_intake),
        }
        out: dict[str, Any] = {}
        for kind, task, arg, n in (("sleep5ms", SLEEP, 0.005, n_sleep),
                                   ("noop", NOOP, None, n_noop)):
            rates: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for r in range(rounds):
                for name in names[r % 2:] + names[:r % 2]:
                    c = variants[name]()
                    try:
                        rate = _rate(c, task, arg, n)
                    finally:
                        c.terminate()
                    rates[name].append(rate)
                    say(f"fleet {kind} round {r + 1}/{rounds} {name:13s} {rate:>9,.0f} tasks/s")
            best = {name: max(v) for name, v in rates.items()}
            out[kind] = {
                "tasks": n, "best": best,
                "median": {k: statistics.median(v) for k, v in rates.items()},
                "rates": rates,
                "ratio": best["three_by_one"] / best["one_by_three"],
            }
        return out


def _kill(d: PhalanxUnderTest) -> None:
    """SIGKILL the daemon's process group, then its workers (groups of their own) by pid."""
    workers = d.worker_processes()
    os.killpg(d.pid, signal.SIGKILL)
    for p in workers:
        try:
            p.kill()
        except psutil.Error:
            pass


def _running_ours(victim: PhalanxUnderTest, ids: set[str | None]) -> str | None:
    """The id of a task of ours the victim's worker is running, if any."""
    for s in victim.ctl.status():
        cur = s.get("current")
        if cur and cur.get("id") in ids:
            return str(cur["id"])
    return None


def _one_kill(c: Client, victim: PhalanxUnderTest, stamps: Path, rep: int
              ) -> tuple[float, float, float]:
    """(kill -> handed over, -> running elsewhere, -> all done), in ms."""
    paths = [stamps / f"{rep}-{i}" for i in range(60)]
    futs = [c.submit(STAMP_AND_SLEEP, str(p), 0.05) for p in paths]
    by_id = {f.task_id: p for f, p in zip(futs, paths, strict=True)}
    deadline = time.monotonic() + READY_TIMEOUT
    while (running := _running_ours(victim, set(by_id))) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the victim never ran a task of ours")
        time.sleep(0.002)
    victim_pids = {p.pid for p in victim.worker_processes()}
    before = c.resubmitted
    _kill(victim)
    t_wall, t0 = time.time(), time.perf_counter()
    while c.resubmitted == before:
        if time.perf_counter() - t0 > READY_TIMEOUT:
            raise TimeoutError("the dead daemon's tasks never moved")
        time.sleep(0.001)
    moved = (time.perf_counter() - t0) * 1000
    for f in futs:
        f.result(RESULT_TIMEOUT)
    done = (time.perf_counter() - t0) * 1000
    starts = [line.split() for line in by_id[running].read_text().splitlines()]
    elsewhere = [float(t) for pid, t in starts if int(pid) not in victim_pids and float(t) >= t_wall]
    if not elsewhere:
        raise RuntimeError("the killed task never started on another daemon")
    return moved, (min(elsewhere) - t_wall) * 1000, done


def failover(reps: int) -> dict[str, Any]:
    moved_ms: list[float] = []
    running_ms: list[float] = []
    done_ms: list[float] = []
    stamps = Path(tempfile.mkdtemp(prefix="phalanx-fleet-"))
    with ExitStack() as stack:
        daemons = [stack.enter_context(PhalanxUnderTest(workers=1)) for _ in range(3)]
        for rep in range(reps):
            victim = daemons[rep % 3]
            c = Client([d.tcp_intake for d in daemons], dead_after=DEAD_AFTER)
            try:
                moved, running, done = _one_kill(c, victim, stamps, rep)
            finally:
                c.terminate()
            moved_ms.append(moved)
            running_ms.append(running)
            done_ms.append(done)
            say(f"failover rep {rep + 1}/{reps}: handed over after {moved:.0f} ms, "
                f"running elsewhere after {running:.0f} ms, all 60 done after {done:.0f} ms")
            victim.stop()
            daemons[daemons.index(victim)] = stack.enter_context(PhalanxUnderTest(workers=1))
    for p in stamps.iterdir():
        p.unlink()
    stamps.rmdir()
    p50 = statistics.median(running_ms)
    return {
        "dead_after_s": DEAD_AFTER, "reps": reps,
        "kill_to_handed_over_ms": {"p50": statistics.median(moved_ms), "max": max(moved_ms),
                                   "samples": moved_ms},
        "kill_to_running_elsewhere_ms": {"p50": p50, "max": max(running_ms),
                                         "samples": running_ms},
        "kill_to_all_done_ms": {"p50": statistics.median(done_ms), "max": max(done_ms)},
        "running_elsewhere_p50_over_dead_after": p50 / 1000 / DEAD_AFTER,
    }


def run(quick: bool, rounds: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["throughput"] = throughput(300 if quick else 1200, 3000 if quick else 20000,
                                       2 if quick else rounds)
    except Exception as exc:  # noqa: BLE001 - recorded; failover still runs
        out["throughput"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        out["failover"] = failover(3 if quick else 7)
    except Exception as exc:  # noqa: BLE001 - recorded
        out["failover"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def render(r: dict[str, Any]) -> str:
    """Ratios side by side: targets >= 0.9x throughput, failover p50 < 2x dead_after."""
    if not isinstance(r, dict):
        return ""
    rows = ["Many hosts on one machine (3 daemons x 1 worker vs 1 daemon x 3 workers, "
            "loopback TCP; targets: throughput >= 0.90x, kill -> running elsewhere p50 "
            "< 2x dead_after):"]
    tp = r.get("throughput", {})
    if "error" in tp:
        rows.append(f"  throughput: ERROR {tp['error']}")
    for kind in ("sleep5ms", "noop"):
        v = tp.get(kind)
        if v:
            rows.append(f"  {kind:9s} 3x1 {v['best']['three_by_one']:>9,.0f}/s   "
                        f"1x3 {v['best']['one_by_three']:>9,.0f}/s   ratio {v['ratio']:.2f}x "
                        f"{'PASS' if v['ratio'] >= 0.9 else 'MISS'}")
    fo = r.get("failover", {})
    if "error" in fo:
        rows.append(f"  failover: ERROR {fo['error']}")
    elif fo:
        ratio = fo["running_elsewhere_p50_over_dead_after"]
        rows.append(f"  failover  dead_after {fo['dead_after_s'] * 1000:.0f} ms: kill -> handed over "
                    f"p50 {fo['kill_to_handed_over_ms']['p50']:.0f} ms, -> running elsewhere p50 "
                    f"{fo['kill_to_running_elsewhere_ms']['p50']:.0f} ms = {ratio:.2f}x dead_after "
                    f"{'PASS' if ratio < 2 else 'MISS'}, all done p50 "
                    f"{fo['kill_to_all_done_ms']['p50']:.0f} ms ({fo['reps']} kills)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true", help="the JSON instead of the table")
    results = run(p.parse_args(argv).quick)
    print(json.dumps(results, indent=2) if p.parse_args(argv).json else render(results))
    return 1 if any("error" in v for v in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
