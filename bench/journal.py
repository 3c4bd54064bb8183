"""The journal's cost: the same client loads against three daemons, the
journal off, on (synchronous=NORMAL, the default) and on with FULL (an
fsync per commit), rounds interleaved. Reported as ratios against off:
submit() and map() throughput (best round), and the one-call latency p50
difference (apply(), pooled samples); and, for a lone round trip on a bare
socket (two commits: the acceptance with its hand-off, which runs while
the worker does, then the result), its p50 and the daemon's CPU per round
trip. The journal lives in the run's temporary directory (the same
filesystem as the other files).

map() runs MAP_REPEAT times per round: one map() of n items lasts about
0.2 s, and on 2 cores a single run's rate swings by 2x with whatever else
the machine does (the journal's ratio with it); the best of 3 rounds was
a draw of that noise, the best of 9 is steadier."""

from __future__ import annotations

import statistics
from contextlib import ExitStack
from typing import Any

from bench import latency, throughput
from bench.harness import PhalanxUnderTest, say
from bench.stats import scaled, summary

MODES = ("off", "normal", "full")
MAP_REPEAT = 3


def run(n: int, rounds: int, lat_count: int) -> dict[str, Any]:
    rates: dict[str, dict[str, list[float]]] = {m: {"submit": [], "map": []} for m in MODES}
    # Daemon CPU per submitted task: steadier than wall-clock rates on a busy machine.
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    lat: dict[str, list[float]] = {m: [] for m in MODES}
    raw: dict[str, list[float]] = {m: [] for m in MODES}
    raw_cpu: dict[str, list[float]] = {m: [] for m in MODES}
    with ExitStack() as stack:
        daemons = {m: stack.enter_context(PhalanxUnderTest(journal=m)) for m in MODES}
        for r in range(rounds):
            order = MODES[r % len(MODES):] + MODES[: r % len(MODES)]
            for mode in order:
                d = daemons[mode]
                s = throughput.phalanx_submit(d, n)
                for _ in range(MAP_REPEAT):
                    m = throughput.phalanx_map(d, n)
                    rates[mode]["map"].append(n / m.seconds)
                got, _ = latency.phalanx_apply(d, lat_count)
                lone, used = latency.phalanx_raw(d, lat_count)
                raw[mode].extend(lone)
                raw_cpu[mode].append(used["daemon"] / lat_count * 1e6)
                rates[mode]["submit"].append(n / s.seconds)
                cpu[mode].append(s.cpu_daemon / n * 1e6)
                lat[mode].extend(got)
                say(f"journal round {r + 1}/{rounds} {mode:6s} submit {n / s.seconds:>9,.0f}/s"
                    f"  map {n / m.seconds:>10,.0f}/s"
                    f"  apply p50 {statistics.median(got) * 1e6:6.1f} us")
    out: dict[str, Any] = {}
    for mode in MODES:
        out[mode] = {
            "submit_best": round(max(rates[mode]["submit"]), 1),
            "map_best": round(max(rates[mode]["map"]), 1),
            "submit_rates": [round(x, 1) for x in rates[mode]["submit"]],
            "map_rates": [round(x, 1) for x in rates[mode]["map"]],
            "apply_latency_us": scaled(summary(lat[mode]), 1e6, 1),
            "submit_daemon_cpu_us_per_task": round(min(cpu[mode]), 2),
            "lone_latency_us": scaled(summary(raw[mode]), 1e6, 1),
            "lone_daemon_cpu_us": round(statistics.median(raw_cpu[mode]), 1),
        }
    off = out["off"]
    for mode in ("normal", "full"):
        on = out[mode]
        on["ratio_vs_off"] = {
            "submit": round(on["submit_best"] / off["submit_best"], 3),
            "map": round(on["map_best"] / off["map_best"], 3),
            "apply_p50_added_us": round(on["apply_latency_us"]["p50"]
                                        - off["apply_latency_us"]["p50"], 1),
            "submit_daemon_cpu": round(on["submit_daemon_cpu_us_per_task"]
                                       / off["submit_daemon_cpu_us_per_task"], 3),
            "lone_p50_added_us": round(on["lone_latency_us"]["p50"]
                                       - off["lone_latency_us"]["p50"], 1),
            "lone_daemon_cpu_added_us": round(on["lone_daemon_cpu_us"]
                                              - off["lone_daemon_cpu_us"], 1),
        }
    return out


def render(r: dict[str, Any]) -> str:
    if not isinstance(r, dict) or "off" not in r:
        return ""
    rows = ["Journal on vs off (same loads, rounds interleaved; targets: submit >= 0.7x, "
            "map >= 0.8x, apply p50 + <= 100 us):",
            f"  {'journal':10s} {'submit/s':>10s} {'ratio':>6s} {'map/s':>11s} {'ratio':>6s}"
            f" {'apply p50':>10s} {'added':>8s} {'daemon cpu/task':>16s}"
            f" {'lone p50':>9s} {'added':>8s} {'daemon cpu/lone':>16s}"]
    for mode in MODES:
        v = r[mode]
        ratio = v.get("ratio_vs_off", {"submit": 1.0, "map": 1.0, "apply_p50_added_us": 0.0,
                                       "submit_daemon_cpu": 1.0, "lone_p50_added_us": 0.0,
                                       "lone_daemon_cpu_added_us": 0.0})
        rows.append(f"  {mode:10s} {v['submit_best']:>10,.0f} {ratio['submit']:>5.2f}x"
                    f" {v['map_best']:>11,.0f} {ratio['map']:>5.2f}x"
                    f" {v['apply_latency_us']['p50']:>7.1f} us {ratio['apply_p50_added_us']:>+5.1f} us"
                    f" {v['submit_daemon_cpu_us_per_task']:>6.2f} us {ratio['submit_daemon_cpu']:>4.2f}x"
                    f" {v['lone_latency_us']['p50']:>6.1f} us {ratio['lone_p50_added_us']:>+5.1f} us"
                    f" {v['lone_daemon_cpu_us']:>6.1f} us {ratio['lone_daemon_cpu_added_us']:>+5.1f}")
    return "\n".join(rows)
