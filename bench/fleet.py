"""Many hosts on one machine: three 1-worker daemons against one 3-worker
daemon, and how fast a dead daemon's tasks move elsewhere.

    throughput   one FleetClient over 3 daemons x 1 worker
                 vs one FleetClient and one plain Client over 1 daemon x 3 workers
                 (rounds interleaved; best round each); two task kinds:
                 sleep(5 ms), where capacity decides, and noop, where the
                 client's round trips and credit gating decide
    failover     3 daemons x 1 worker, a stream of sleep(50 ms) tasks;
                 SIGKILL the daemon holding the most; time from the kill to
                 the client handing its tasks to the others (Router.moved),
                 and to the last future done. Heartbeat 0.1 s, dead_after 0.5 s.

Run alone: ``python -m bench.fleet [--quick]``; ``make bench`` runs it too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Any

from bench.harness import PhalanxUnderTest, say
from supervisor.client import Client
from supervisor.client.fleet import FleetClient

SLEEP = "bench.tasks:sleep"
NOOP = "bench.tasks:noop"
HEARTBEAT = 0.1
DEAD_AFTER = 0.5
# Bounds on every wait here: a run that hangs is a failure, not a stall.
READY_TIMEOUT = 30.0
RESULT_TIMEOUT = 120.0


def _fleet(endpoints: list[str]) -> FleetClient:
    c = FleetClient(endpoints, heartbeat=HEARTBEAT, dead_after=DEAD_AFTER)
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(p["alive"] and p["capacity"] for p in c.daemons()):
        if time.monotonic() > deadline:
            c.terminate()
            raise TimeoutError(f"daemons not all alive: {c.daemons()}")
        time.sleep(0.01)
    return c


def _rate(c: Client, task: str, arg: Any, n: int) -> float:
    for f in [c.submit(task, arg) for _ in range(min(n, 50))]:  # warm up
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
        variants = {
            "three_by_one.fleet": lambda: _fleet([d.intake for d in three]),
            "one_by_three.fleet": lambda: _fleet([one.intake]),
            "one_by_three.client": lambda: Client(one.intake),
        }
        out: dict[str, Any] = {}
        for kind, task, arg, n in (("sleep5ms", SLEEP, 0.005, n_sleep), ("noop", NOOP, None, n_noop)):
            rates: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for r in range(rounds):
                for name in names[r % 3:] + names[:r % 3]:
                    c = variants[name]()
                    try:
                        rate = _rate(c, task, arg, n)
                    finally:
                        c.terminate()
                    rates[name].append(rate)
                    say(f"fleet {kind} round {r + 1}/{rounds} {name:22s} {rate:>9,.0f} tasks/s")
            best = {name: max(v) for name, v in rates.items()}
            out[kind] = {
                "tasks": n, "best": best, "median": {k: statistics.median(v) for k, v in rates.items()},
                "ratio_vs_one_daemon_client": best["three_by_one.fleet"] / best["one_by_three.client"],
                "ratio_vs_one_daemon_fleet": best["three_by_one.fleet"] / best["one_by_three.fleet"],
            }
        return out


def failover(reps: int) -> dict[str, Any]:
    moved_ms: list[float] = []
    done_ms: list[float] = []
    with ExitStack() as stack:
        daemons = [stack.enter_context(PhalanxUnderTest(workers=1)) for _ in range(3)]
        for rep in range(reps):
            c = _fleet([d.intake for d in daemons])
            try:
                futs = [c.submit(SLEEP, 0.05) for _ in range(60)]
                deadline = time.monotonic() + READY_TIMEOUT
                while not any(p["holding"] for p in c.daemons()):
                    if time.monotonic() > deadline:
                        raise TimeoutError("no daemon ever held a task")
                    time.sleep(0.005)
                victim_ep = max(c.daemons(), key=lambda p: int(str(p["holding"])))["endpoint"]
                victim = next(d for d in daemons if d.intake == victim_ep)
                before = c.moved
                os.killpg(victim.pid, signal.SIGKILL)
                t0 = time.perf_counter()
                while c.moved == before:
                    if time.perf_counter() - t0 > READY_TIMEOUT:
                        raise TimeoutError("the dead daemon's tasks never moved")
                    time.sleep(0.001)
                moved_ms.append((time.perf_counter() - t0) * 1000)
                for f in futs:
                    f.result(RESULT_TIMEOUT)
                done_ms.append((time.perf_counter() - t0) * 1000)
                say(f"failover rep {rep + 1}/{reps}: moved after {moved_ms[-1]:.0f} ms, "
                    f"all done after {done_ms[-1]:.0f} ms")
            finally:
                c.terminate()
            victim.stop()
            daemons[daemons.index(victim)] = stack.enter_context(PhalanxUnderTest(workers=1))
    p50 = statistics.median(moved_ms)
    return {
        "heartbeat_s": HEARTBEAT, "dead_after_s": DEAD_AFTER, "reps": reps,
        "kill_to_moved_ms": {"p50": p50, "max": max(moved_ms), "samples": moved_ms},
        "kill_to_all_done_ms": {"p50": statistics.median(done_ms), "max": max(done_ms)},
        "p50_over_dead_after": p50 / 1000 / DEAD_AFTER,
    }


def run(quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 3
    return {
        "throughput": throughput(300 if quick else 1200, 2000 if quick else 20000, rounds),
        "failover": failover(3 if quick else 7),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    results = run(p.parse_args(argv).quick)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
