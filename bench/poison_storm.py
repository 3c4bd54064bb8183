"""``python -m bench.poison_storm``: healthy work among poison tasks.

40 ``crash("kill")`` tasks mixed into 5,000 ``echo`` tasks on 2 workers,
against the same 5,000 echoes alone, one run each on the same daemon. For
each healthy task: the time from submission to result. Reported: the
healthy tasks' extra wait (p50, p99, max of the mix minus the clean run's),
the total time of each run, and how every poison task ended.
"""

from __future__ import annotations

import json
import sys
import time

from bench.harness import PhalanxUnderTest, say
from supervisor.client import Client, TaskError

ECHO = "workers.builtin:echo"
CRASH = "workers.testing:crash"
HEALTHY, POISON = 5000, 40


def _run(client: Client, poison: bool) -> tuple[list[float], float, dict[str, int]]:
    futures = []
    outcomes: dict[str, int] = {}
    t0 = time.perf_counter()
    for i in range(HEALTHY):
        if poison and i % (HEALTHY // POISON) == 0:
            futures.append((False, 0.0, client.submit(CRASH, "kill")))
        futures.append((True, time.perf_counter(), client.submit(ECHO, i)))
    waits: list[float] = []
    for healthy, at, fut in futures:
        if healthy:
            fut.result(timeout=300)
            waits.append(time.perf_counter() - at)  # bounded by when we looked: an upper bound
        else:
            try:
                fut.result(timeout=300)
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except TaskError as err:
                outcomes[err.type] = outcomes.get(err.type, 0) + 1
    return sorted(waits), time.perf_counter() - t0, outcomes


def _q(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(d: PhalanxUnderTest) -> dict[str, object]:
    """The clean run and the mix on daemon ``d``, after a warm-up."""
    with Client(d.intake) as client:
        client.ping()
        say(f"poison storm: {HEALTHY:,} echoes, then the same with {POISON} crash('kill') among them")
        _run(client, poison=False)  # warm-up
        clean, clean_total, _ = _run(client, poison=False)
        mix, mix_total, outcomes = _run(client, poison=True)
        status = d.ctl.status()
    return {
        "healthy_tasks": HEALTHY, "poison_tasks": POISON, "workers": len(status),
        "clean_total_s": round(clean_total, 3), "mix_total_s": round(mix_total, 3),
        "healthy_wait_ms": {
            "clean": {"p50": _q(clean, 0.5) * 1e3, "p99": _q(clean, 0.99) * 1e3},
            "mix": {"p50": _q(mix, 0.5) * 1e3, "p99": _q(mix, 0.99) * 1e3, "max": mix[-1] * 1e3},
        },
        "extra_wait_ms": {"p50": (_q(mix, 0.5) - _q(clean, 0.5)) * 1e3,
                          "p99": (_q(mix, 0.99) - _q(clean, 0.99)) * 1e3},
        "poison_outcomes": outcomes,
        "all_poison_crashed": outcomes == {"WorkerCrashed": POISON},
        "slot_states_after": [s["state"] for s in status],
    }


def render(r: dict[str, object]) -> str:
    """The section's lines for the report."""
    if not r or "error" in r:
        return ""
    w: dict[str, dict[str, float]] = r["healthy_wait_ms"]  # type: ignore[assignment]
    x: dict[str, float] = r["extra_wait_ms"]  # type: ignore[assignment]
    return (f"\nPoison storm: {r['poison_tasks']} crash('kill') among {r['healthy_tasks']:,} echoes on "
            f"{r['workers']} workers: total {r['mix_total_s']:.2f} s against {r['clean_total_s']:.2f} s "
            f"clean; healthy tasks' wait p50 {w['mix']['p50']:.0f} ms (clean {w['clean']['p50']:.0f}), "
            f"extra p50 {x['p50']:.0f} ms, p99 {x['p99']:.0f} ms; poison ended {r['poison_outcomes']}; "
            f"slots after: {', '.join(map(str, r['slot_states_after']))}")  # type: ignore[call-overload]


def main() -> int:
    with PhalanxUnderTest() as d:
        out = run(d)
    say(json.dumps(out, indent=1))
    print(json.dumps(out))
    return 0 if out["all_poison_crashed"] else 1


if __name__ == "__main__":
    sys.exit(main())
