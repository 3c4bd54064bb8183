"""``python -m bench.run``: Phalanx against multiprocessing, side by side.

    phalanxd (temp config, 2 workers) --+-- throughput: 7 variants x rounds, interleaved
                                        +-- memory (at ready, after throughput)
                                        +-- latency: 3 variants x rounds, interleaved
                                        +-- numpy arrays: 100 MB round trip, chunked reduction
                                        +-- crash recovery: SIGKILL idle / busy workers
                                        +-- poison task: crash('kill') until WorkerCrashed
                                        +-- poison storm: 40 of them among 5,000 echoes
    then: journal on/off (three daemons), many hosts (bench/fleet.py: three
    1-worker daemons vs one 3-worker daemon, kills), and, without phalanxd:
    Pool/PPE under the same kills, supervisord's RSS,
    supervisor.Pool (its own private phalanxd) against Pool/PPE/loky (pool.py)

Progress goes to stderr as it happens; the report (or, with ``--json``, the
JSON) goes to stdout; the JSON is always written to ``--out``. A section
that fails is recorded as an error and the rest still run; the exit status
is then 1. phalanxd is torn down on every path, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    alt_crash,
    arrays,
    fleet,
    journal,
    latency,
    memory,
    poison_storm,
    pool,
    recovery,
    report,
    throughput,
)
from bench.harness import CONFIG_CHANGES, REPO, WORKERS, PhalanxUnderTest, say


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer tasks and repetitions (under a minute)")
    p.add_argument("--tasks", type=int, metavar="N", help="tasks per throughput measurement "
                   "(default 200000, --quick 20000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement (default 3)")
    p.add_argument("--json", action="store_true", help="print the JSON to stdout instead of the table")
    p.add_argument("--out", default=str(REPO / "bench" / "results.json"), metavar="PATH",
                   help="where to write the JSON (default bench/results.json)")
    p.add_argument("--no-supervisord", action="store_true",
                   help="do not pip-install supervisor to measure it; use the reference figure")
    return p.parse_args(argv)


def _revision() -> str:
    """The commit measured, with '+dirty' if the work tree has changes (read-only git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _section(results: dict[str, Any], key: str, fn: Callable[[], Any],
             daemon: PhalanxUnderTest | None = None) -> None:
    say(f"== {key}")
    try:
        results[key] = fn()
    except Exception as exc:  # noqa: BLE001 - recorded with its traceback; the other sections still run
        say(f"{key} FAILED: {type(exc).__name__}: {exc}")
        results[key] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        if daemon is not None:
            results[key]["phalanxd_log_tail"] = daemon.log_tail()


_MAIN_PID = os.getpid()


def _on_sigterm(signum: int, frame: object) -> None:
    if os.getpid() != _MAIN_PID:  # a forked pool worker inherited this handler
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt  # unwinds through every with/finally: phalanxd is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.tasks or (20_000 if args.quick else 200_000)
    rounds = args.rounds
    lat_count = 500 if args.quick else 2000
    crash_reps = 5 if args.quick else 20
    poison_reps = 3 if args.quick else 5
    hold = 0.5
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.perf_counter()
    results: dict[str, Any] = {"meta": {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": _revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "workers": WORKERS,
        "tasks": n,
        "rounds": rounds,
        "quick": args.quick,
        "latency_round_trips_per_round": lat_count,
        "crash_reps": crash_reps,
        "poison_reps": poison_reps,
        "throughput_statistic": "best round (highest tasks/s); median also given",
        "latency_statistic": "percentiles over all rounds' samples pooled",
        "multiprocessing_start_method": multiprocessing.get_start_method(),
        "phalanx_config_changes_from_defaults": CONFIG_CHANGES,
        "out": args.out,
    }}
    memory_results: dict[str, Any] = {}
    results["memory"] = memory_results
    failed = False
    try:
        say(f"starting phalanxd ({WORKERS} workers); N={n:,}, {rounds} rounds")
        with PhalanxUnderTest() as d:
            say(f"phalanxd ready (pid {d.pid})")
            memory_results["phalanx_at_ready"] = memory.phalanx(d)
            _section(results, "throughput", lambda: throughput.run(d, n, rounds), d)
            memory_results["phalanx_after_throughput"] = memory.phalanx(d)
            say(f"phalanxd RSS after throughput: "
                f"{memory_results['phalanx_after_throughput']['process']['rss']:.1f} MiB")
            _section(results, "latency", lambda: latency.run(d, lat_count, rounds), d)
            _section(results, "arrays", lambda: arrays.run(d, rounds), d)
            _section(results, "crash_recovery", lambda: recovery.crash_recovery(d, crash_reps, hold), d)
            _section(results, "poison", lambda: recovery.poison(d, poison_reps), d)
            _section(results, "poison_storm", lambda: poison_storm.run(d), d)
            say("stopping phalanxd")
        say("journal on vs off: three daemons")
        _section(results, "journal", lambda: journal.run(n // 2, rounds, lat_count))
        say("many hosts: three 1-worker daemons vs one 3-worker daemon, then kills")
        _section(results, "fleet", lambda: fleet.run(args.quick, rounds))
        _section(results, "crash_alternatives", lambda: alt_crash.run(min(crash_reps, 10)))
        _section(results, "pool", lambda: pool.run(rounds))
        if args.no_supervisord:
            memory_results["supervisord"] = memory.reference("measurement skipped: --no-supervisord")
        else:
            memory_results["supervisord"] = memory.supervisord()
    except KeyboardInterrupt:
        say("interrupted: phalanxd stopped; partial results follow")
        results["meta"]["interrupted"] = True
        failed = True
    except Exception as exc:  # noqa: BLE001 - phalanxd did not start or died: report what we have
        say(f"FAILED: {type(exc).__name__}: {exc}")
        results["meta"]["error"] = f"{type(exc).__name__}: {exc}"
        failed = True
    results["meta"]["total_seconds"] = round(time.perf_counter() - started, 1)
    ts = report.targets(results)
    results["targets"] = report.as_json(ts)
    failed = failed or any(isinstance(v, dict) and "error" in v for v in results.values())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results written to {out}")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(report.render(results, ts))
        print(poison_storm.render(results.get("poison_storm", {})))
        print(journal.render(results.get("journal", {})))
        print(fleet.render(results.get("fleet", {})))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
