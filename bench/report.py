"""Targets and the human-readable report.

Each target compares our figure with a threshold, either absolute (a crash
recovery under 10 ms) or relative to an alternative measured in the same
run (a ratio: machines are noisy, so ratios are what we report). A figure a
failed section did not produce shows as ``n/a`` and the target as ERROR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Target:
    name: str
    ours: float | None
    alt: float | None
    alt_label: str
    ratio: float | None  # ours / alt
    target: str
    passed: bool | None  # None: not measured
    unit: str


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def targets(r: dict[str, Any]) -> list[Target]:
    out: list[Target] = []

    def tput(ours_key: str, alt_key: str, at_least: float) -> None:
        ours = _get(r, "throughput", ours_key, "best")
        alt = _get(r, "throughput", alt_key, "best")
        ratio = _ratio(ours, alt)
        out.append(Target(
            f"{_get(r, 'throughput', ours_key, 'label') or ours_key} vs "
            f"{_get(r, 'throughput', alt_key, 'label') or alt_key}",
            ours, alt, alt_key, ratio, f"ratio >= {at_least:g}",
            None if ratio is None else ratio >= at_least, "tasks/s"))

    tput("phalanx.submit", "pool.imap_unordered.c1", 1.5)
    tput("phalanx.submit", "ppe.submit", 8.0)
    tput("phalanx.map", "ppe.map.c64", 1.0)
    tput("phalanx.submit.tcp", "phalanx.submit", 0.8)  # TCP vs the local ipc endpoint

    for variant, label in (("phalanx.apply", "apply()"), ("phalanx.submit.result", "submit().result()")):
        for q in ("p50", "p99"):
            ours = _get(r, "latency", variant, q)
            alt = _get(r, "latency", "pool.apply", q)
            ratio = _ratio(ours, alt)
            out.append(Target(f"Round trip {q}: {label} vs Pool.apply()", ours, alt,
                              "pool.apply", ratio, "ratio <= 1.0 (no slower)",
                              None if ratio is None else ratio <= 1.0, "us"))

    # Issue 14's figure: phalanxd's CPU per lone round trip (bare DEALER),
    # beside the floor of its two hops measured in the same run: the CPU of
    # a ZeroMQ ipc echo process plus a multiprocessing Pipe echo process.
    cpu = _get(r, "latency", "phalanx.raw_dealer", "cpu_us_per_round_trip", "daemon")
    zf = _get(r, "latency", "floor.zmq_echo", "cpu_us_per_round_trip", "workers")
    pf = _get(r, "latency", "floor.pipe_echo", "cpu_us_per_round_trip", "workers")
    floor = None if zf is None or pf is None else zf + pf
    out.append(Target("phalanxd CPU per lone round trip (bare DEALER) vs its hops' echo floor",
                      cpu, floor, "zmq echo + pipe echo CPU", _ratio(cpu, floor), "<= 60 us",
                      None if cpu is None else cpu <= 60, "us"))

    def absolute(name: str, path: tuple[str, ...], limit: float, alt: float | None = None,
                 alt_label: str = "") -> None:
        ours = _get(r, *path)
        out.append(Target(name, ours, alt, alt_label, _ratio(ours, alt), f"< {limit:g} ms",
                          None if ours is None else ours < limit, "ms"))

    def seconds(name: str, path: tuple[str, ...], alt_key: str, at_most: float) -> None:
        ours = _get(r, "arrays", *path, "best")
        alt = _get(r, "arrays", path[0], alt_key, "best")
        ratio = _ratio(ours, alt)
        out.append(Target(name, None if ours is None else ours * 1e3,
                          None if alt is None else alt * 1e3, alt_key, ratio,
                          f"ratio <= {at_most:g}", None if ratio is None else ratio <= at_most,
                          "ms"))

    seconds("100 MB array to a worker and back vs Pool.apply", ("round_trip_100mb", "phalanx.call"),
            "pool.apply", 0.5)
    seconds("100 MB array to a worker and back: supervisor.Pool.apply vs Pool.apply",
            ("round_trip_100mb", "phalanx.pool.apply"), "pool.apply", 0.5)
    seconds("numpy sum over 64 x 2 MiB chunks: map vs Pool.map", ("reduction", "phalanx.map"),
            "pool.map", 1.0)
    seconds("numpy sum over 64 x 2 MiB chunks: supervisor.Pool.map vs Pool.map",
            ("reduction", "phalanx.pool.map"), "pool.map", 1.0)
    seconds("numpy sum over 64 x 2 MiB chunks: map vs ProcessPoolExecutor.map",
            ("reduction", "phalanx.map"), "ppe.map", 1.0)

    pool_respawn = _get(r, "crash_alternatives", "pool_respawn", "p50")
    absolute("Kill -> worker.spawned, p50", ("crash_recovery", "idle_worker", "spawned", "published", "p50"),
             10.0, pool_respawn, "Pool respawn p50")
    absolute("Kill -> worker.started, p50", ("crash_recovery", "idle_worker", "started", "published", "p50"), 20.0)
    absolute("Kill -> task.retried, p50", ("crash_recovery", "task_in_flight", "retried", "published", "p50"), 10.0)
    absolute("Poison task: submit -> WorkerCrashed, p50", ("poison", "submit_to_error", "p50"), 100.0)

    def pool_ratio(name: str, ours: float | None, alt: float | None, alt_label: str,
                   at_most: float) -> None:
        ratio = _ratio(ours, alt)
        out.append(Target(name, None if ours is None else ours * 1000,
                          None if alt is None else alt * 1000, alt_label, ratio,
                          f"ratio <= {at_most:g}", None if ratio is None else ratio <= at_most, "ms"))

    pool_ratio("Pool(4) start to first result vs multiprocessing.Pool(4)",
               _get(r, "pool", "start_to_first_result_s", "ours"),
               _get(r, "pool", "start_to_first_result_s", "mp"), "multiprocessing.Pool(4)", 2.0)
    pool_ratio("Pool(4) start to first result, first pool of a fresh process",
               _get(r, "pool", "cold_start_to_first_result_s", "ours"),
               _get(r, "pool", "cold_start_to_first_result_s", "mp"), "multiprocessing.Pool(4)",
               2.0)
    seed = _get(r, "pool", "seed_map_s") or {}
    for alt_key, label in (("mp.pool", "multiprocessing.Pool.map"),
                           ("ppe", "ProcessPoolExecutor.map"), ("loky", "loky executor map")):
        pool_ratio(f"Seed CPU-bound map: Pool.map vs {label}", seed.get("phalanx.pool"),
                   seed.get(alt_key), label, 1.25)

    # The journal's cost (bench/journal.py), each synchronous mode against off.
    for mode in ("normal", "full"):
        for kind, at_least in (("submit", 0.7), ("map", 0.8)):
            ours = _get(r, "journal", mode, f"{kind}_best")
            off = _get(r, "journal", "off", f"{kind}_best")
            ratio = _ratio(ours, off)
            out.append(Target(f"Journal {mode}: {kind}() vs journal off", ours, off, "journal off",
                              ratio, f"ratio >= {at_least:g}",
                              None if ratio is None else ratio >= at_least, "tasks/s"))
        ours = _get(r, "journal", mode, "apply_latency_us", "p50")
        off = _get(r, "journal", "off", "apply_latency_us", "p50")
        added = None if ours is None or off is None else ours - off
        out.append(Target(f"Journal {mode}: apply() p50 added to journal off", ours, off,
                          "journal off", _ratio(ours, off), "added <= 100 us",
                          None if added is None else added <= 100.0, "us"))

    for kind, label in (("sleep5ms", "sleep(5 ms)"), ("noop", "no-op")):
        ours = _get(r, "fleet", "throughput", kind, "best", "three_by_one")
        alt = _get(r, "fleet", "throughput", kind, "best", "one_by_three")
        ratio = _ratio(ours, alt)
        out.append(Target(f"Many hosts, {label}: 3 daemons x 1 worker vs 1 daemon x 3",
                          ours, alt, "1 daemon x 3 workers", ratio, "ratio >= 0.9",
                          None if ratio is None else ratio >= 0.9, "tasks/s"))
    ours = _get(r, "fleet", "failover", "kill_to_running_elsewhere_ms", "p50")
    dead = _get(r, "fleet", "failover", "dead_after_s")
    alt = None if dead is None else 2000 * dead
    ratio = _ratio(ours, alt)
    out.append(Target("Many hosts: daemon SIGKILLed -> its task running elsewhere, p50", ours,
                      alt, "2 x dead_after", ratio, "ratio < 1",
                      None if ratio is None else ratio < 1, "ms"))

    alt = _get(r, "memory", "supervisord", "process", "rss")
    source = _get(r, "memory", "supervisord", "source") or "?"
    for key, when in (("phalanx_after_throughput", "after throughput"), ("phalanx_at_ready", "idle at ready")):
        ours = _get(r, "memory", key, "process", "rss")
        ratio = _ratio(ours, alt)
        out.append(Target(f"phalanxd RSS {when} vs supervisord idle", ours, alt, f"supervisord, {source}",
                          ratio, "ratio <= 1.0", None if ratio is None else ratio <= 1.0, "MiB"))
    return out


def as_json(ts: list[Target]) -> list[dict[str, Any]]:
    return [asdict(t) for t in ts]


# ------------------------------------------------------------------ text
def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "tasks/s":
        return f"{v:,.0f}/s"
    if unit == "us":
        return f"{v:,.1f} us"
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    return f"{v:g}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render(r: dict[str, Any], ts: list[Target]) -> str:
    meta = r.get("meta", {})
    parts = [
        f"Phalanx benchmark at {meta.get('revision')}: {meta.get('cpus')} CPUs, {meta.get('workers')} workers everywhere, "
        f"Python {meta.get('python')}, N={meta.get('tasks'):,} tasks, {meta.get('rounds')} rounds "
        f"interleaved; throughput = best round (median in brackets).",
    ]
    tp = r.get("throughput")
    if isinstance(tp, dict) and "error" not in tp:
        rows = []
        for v in tp.values():
            cpu = v["cpu_us_per_task_best_round"]
            rows.append([v["label"], f"{v['best']:,.0f}/s", f"({v['median']:,.0f}/s)",
                         f"{cpu['client_process']:.1f}", f"{cpu['daemon']:.1f}", f"{cpu['workers']:.1f}"])
        parts += ["", "No-op throughput (CPU us per task in the best round: this process / phalanxd / workers)",
                  _table(["variant", "best", "(median)", "client", "daemon", "workers"], rows, {1, 2, 3, 4, 5})]
    lat = r.get("latency")
    if isinstance(lat, dict) and "error" not in lat:
        rows = []
        for v in lat.values():
            c = v.get("cpu_us_per_round_trip", {})
            rows.append([v["label"], f"{v['p50']:.1f}", f"{v['p90']:.1f}", f"{v['p99']:.1f}",
                         f"{v['max']:.1f}", str(v["over_1ms"]), str(v["n"]),
                         f"{c.get('client', 0):.0f}", f"{c.get('daemon', 0):.0f}", f"{c.get('workers', 0):.0f}"])
        parts += ["", "Round-trip latency, one task at a time (us; CPU us per round trip: this process /"
                      " phalanxd / workers or echo peer)",
                  _table(["variant", "p50", "p90", "p99", "max", ">1ms", "n", "client", "daemon", "workers"],
                         rows, set(range(1, 10)))]
    cr = r.get("crash_recovery")
    if isinstance(cr, dict) and "error" not in cr:
        rows = []
        for case in ("idle_worker", "task_in_flight"):
            for ev, s in cr[case].items():
                p, a = s["published"], s["arrived"]
                rows.append([case.replace("_", " "), ev, f"{p['p50']:.2f}", f"{p['max']:.2f}",
                             f"{a['p50']:.2f}", f"{a['max']:.2f}"])
        parts += ["", f"Crash recovery, ms after os.kill ({cr['reps']} kills each; 'published' = event's own "
                      "time field, the reported figure; 'arrived' = at our subscriber)",
                  _table(["case", "event", "pub p50", "pub max", "arr p50", "arr max"], rows, {2, 3, 4, 5})]
    po = r.get("poison")
    if isinstance(po, dict) and "error" not in po:
        rows = [[k.replace("_", " "), f"{po[k]['p50']:.1f}", f"{po[k]['max']:.1f}", str(po[k]["n"])]
                for k in ("submit_to_error", "error_to_all_running", "submit_to_all_running")]
        parts += ["", f"Poison task {po['task']} -> {', '.join(po['error_types'])} (ms)",
                  _table(["interval", "p50", "max", "n"], rows, {1, 2, 3})]
        for tl in po.get("traced_timelines") or []:
            parts.append("  traced try, ms after submit: " + ", ".join(
                f"{what}{'' if who is None else f' {who}'} {ms:.1f}" for what, who, ms in tl))
    mem = r.get("memory")
    if isinstance(mem, dict):
        rows = []
        for key, label in (("phalanx_at_ready", "phalanxd at ready"),
                           ("phalanx_after_throughput", "phalanxd after throughput"),
                           ("supervisord", "supervisord")):
            m = mem.get(key)
            if not isinstance(m, dict) or "process" not in m:
                continue
            tree = m.get("tree", {})
            uss = m["process"].get("uss")
            rows.append([label, f"{m['process'].get('rss', 0):.1f}", "-" if uss is None else f"{uss:.1f}",
                         f"{tree.get('rss', 0):.1f}" if tree else "-",
                         f"{tree.get('pss', 0):.1f}" if tree else "-", str(m.get("tree_processes", "-"))])
        parts += ["", "Memory (MiB; tree = the daemon and all its descendants)",
                  _table(["", "RSS", "USS", "tree RSS", "tree PSS", "procs"], rows, {1, 2, 3, 4, 5})]
        note = _get(mem, "supervisord", "note")
        if note:
            parts.append(f"  {note}")
    ar = r.get("arrays")
    if isinstance(ar, dict) and "error" not in ar:
        rows = [[f"{section}: {name}", f"{v['best'] * 1e3:.1f}", f"({v['median'] * 1e3:.1f})"]
                for section in ("round_trip_100mb", "reduction", "inline_8mb")
                for name, v in ar.get(section, {}).items()]
        parts += ["", "numpy arrays (ms, best round, median in brackets; phalanx = ipc client, "
                      "shared memory; .inline = shared memory off, the array in the message)",
                  _table(["variant", "best", "(median)"], rows, {1, 2})]
        per_mb = _get(ar, "encode_copy", "ms_per_mb")
        if per_mb is not None:
            parts.append(f"  putting an array in a message costs the sender {per_mb:.3f} ms per MB "
                         "(the copy extra ZeroMQ frames would save)")
    ca = r.get("crash_alternatives")
    if isinstance(ca, dict) and "in_flight" in ca:
        parts += ["", "The same kill under the alternatives:"]
        parts += [f"  {k}: {v}" for k, v in ca["in_flight"].items()]
    po = r.get("pool")
    if isinstance(po, dict) and "error" not in po:
        st = po["start_to_first_result_s"]
        parts += ["", f"supervisor.Pool (median of rounds): Pool(4) start to first result "
                      f"{st['ours'] * 1000:.0f} ms, multiprocessing.Pool(4) {st['mp'] * 1000:.0f} ms "
                      f"({po['mp_start_method']}); the first pool of a fresh process "
                      + (f"{po['cold_start_to_first_result_s']['ours'] * 1000:.0f} ms vs "
                         f"{po['cold_start_to_first_result_s']['mp'] * 1000:.0f} ms"
                         if "cold_start_to_first_result_s" in po else "(not measured)")
                      + f"; the seed's CPU-bound map of {po['seed_items']} "
                      f"items, {meta.get('workers')} workers, seconds: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in po["seed_map_s"].items())]
        if po.get("note"):
            parts.append(f"  {po['note']}")
    rows = []
    for t in ts:
        verdict = "ERROR" if t.passed is None else ("PASS" if t.passed else "MISS")
        rows.append([t.name, _fmt(t.ours, t.unit),
                     _fmt(t.alt, t.unit) + (f" ({t.alt_label})" if t.alt is not None and t.unit in ("ms", "MiB") else ""),
                     "-" if t.ratio is None else f"{t.ratio:.2f}x", t.target, verdict])
    parts += ["", "TARGETS (ratio = ours / alternative)",
              _table(["target", "Phalanx", "alternative", "ratio", "target", "result"], rows, {1, 3})]
    errors = {k: v["error"] for k, v in r.items() if isinstance(v, dict) and "error" in v}
    for k, e in errors.items():
        parts.append(f"ERROR in {k}: {e}")
    parts.append(f"\nTotal run time {meta.get('total_seconds', 0):.0f} s; JSON in {meta.get('out')}")
    return "\n".join(parts)
