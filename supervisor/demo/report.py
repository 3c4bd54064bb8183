"""The demo's accounting: tallies, progress, outcome, verdict, summary.

``Tally`` counts how each submitted future resolved, ``Progress`` draws the
progress line on stderr, and ``summarize``/``outcome``/``verdict``/``render``
turn the tally and the watch into the judged summary (text or JSON).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from supervisor.client import TaskError
from supervisor.config import Config
from supervisor.demo import seed
from supervisor.demo.chaos import Watch


# ===================================================================== tally
@dataclass
class Tally:
    """Futures' outcomes; counts are bumped only in the client's I/O thread."""

    futures: list[Future[Any]] = field(default_factory=list)
    expected: list[Any] = field(default_factory=list)  # echo's argument, else None
    resolutions: list[int] = field(default_factory=list)
    done: int = 0
    wake: threading.Event = field(default_factory=threading.Event)

    def add(self, fut: Future[Any], expected: Any) -> None:
        index = len(self.futures)
        self.futures.append(fut)
        self.expected.append(expected)
        self.resolutions.append(0)

        def resolved(_: Future[Any]) -> None:
            self.resolutions[index] += 1
            self.done += 1
            self.wake.set()

        fut.add_done_callback(resolved)


class Progress:
    """A \\r-redrawn line on a terminal; a line every few seconds otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = 0.0
        self.width = 0  # of the line drawn last, to blank what a shorter one leaves

    def show(self, done: int, killed: int, retries: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.1 if self.tty else 2.0):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        width = 30
        filled = width * done // max(self.total, 1)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                f"{rate:,.0f} tasks/s  killed {killed}  retries {retries}")
        if self.tty:
            pad = " " * max(0, self.width - len(line))
            self.width = len(line)
            sys.stderr.write("\r" + line + pad + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


# ==================================================================== summary
def outcome(tally: Tally, poison: list[tuple[int, str]]) -> dict[str, Any]:
    succeeded = wrong = 0
    failed: dict[str, dict[str, Any]] = {}
    for fut, want in zip(tally.futures, tally.expected, strict=True):
        if not fut.done():
            continue
        exc = fut.exception()
        if exc is None:
            succeeded += 1
            if want is not None and fut.result() != want:
                wrong += 1
            continue
        kind = exc.type if isinstance(exc, TaskError) else type(exc).__name__
        msg = exc.message if isinstance(exc, TaskError) else str(exc)
        entry = failed.setdefault(kind, {"count": 0, "example": msg})
        entry["count"] += 1
    poisoned = []
    for index, mode in poison:
        fut = tally.futures[index]
        exc = fut.exception() if fut.done() else None
        poisoned.append({
            "mode": mode,
            "id": exc.task_id if isinstance(exc, TaskError) else None,
            "type": exc.type if isinstance(exc, TaskError) else None,
            "message": exc.message if isinstance(exc, TaskError) else
            ("unresolved" if not fut.done() else "succeeded?!"),
        })
    return {"succeeded": succeeded, "failed_by_type": failed, "wrong_values": wrong,
            "poison": poisoned}


def render(s: dict[str, Any]) -> str:
    out = [f"Phalanx demo: {s['tasks']} tasks + {len(s['poison'])} poison tasks on "
           f"{s['workers']} workers, a worker SIGKILLed every {s['chaos_interval']:g}s",
           "", f"  {'submitted':<20}{s['submitted']:>8}",
           f"  {'succeeded':<20}{s['succeeded']:>8}",
           f"  {'failed':<20}{s['failed']:>8}"]
    for kind, e in sorted(s["failed_by_type"].items()):
        out.append(f"    {kind:<18}{e['count']:>8}   e.g. {e['example']}")
    out.append("  poison tasks:")
    for p in s["poison"]:
        mark = "quarantined" if p["quarantined"] else "NOT quarantined"
        out.append(f"    crash({p['mode']}){'':<{11 - len(p['mode'])}}{mark}: "
                   f"{p['type']}: {p['message']}")
    out += [
        f"  {'retried':<20}{s['retried']:>8}   (daemon counted {s['daemon_stats'].get('retried')})",
        f"  {'workers killed':<20}{s['workers_killed']:>8}   by this demo, SIGKILL by pid",
        f"  {'workers restarted':<20}{s['workers_restarted']:>8}   "
        f"({s['workers_exited']} exited; backoffs {s['backoffs']}, fatal {s['fatal']})",
        f"  {'quarantined':<20}{s['quarantined']:>8}",
        f"  {'LOST':<20}{s['lost']:>8}   futures not resolved exactly once",
        f"  {'duplicates':<20}{s['duplicates']:>8}   ids published more than once "
        f"({s['published_results']} results published, {s['published_missing']} missing, "
        f"{s['publish_gaps']} seq gaps)",
        f"  {'wrong values':<20}{s['wrong_values']:>8}",
        f"  {'throughput':<20}{s['throughput']:>8,.0f}   tasks/s "
        f"({s['stream_seconds']:.2f}s for {s['submitted']} tasks)",
        f"  {'daemon stop':<20}{s['daemon_exit_code']!s:>8}   exit code, "
        f"after {s['stop_seconds']:.2f}s; {len(s['workers_left'])} of the "
        f"{s['worker_processes_seen']} processes the daemon started are left",
        *(seed.render(s["pool"]) if "pool" in s else []),
        "", f"{'PASS' if s['ok'] else 'FAIL'}: " + "; ".join(s["verdict"]),
    ]
    return "\n".join(out)


def verdict(s: dict[str, Any]) -> tuple[list[str], bool]:
    """What went wrong, if anything; (notes, ok)."""
    bad = []
    if s["lost"]:
        bad.append(f"{s['lost']} tasks LOST")
    if s["duplicates"]:
        bad.append(f"{s['duplicates']} results duplicated")
    if s["wrong_values"]:
        bad.append(f"{s['wrong_values']} wrong values")
    if s["succeeded"] + s["failed"] != s["submitted"]:
        bad.append("succeeded + failed != submitted")
    if s["published_missing"] and not s["publish_gaps"]:
        bad.append(f"{s['published_missing']} results never published")
    if s["daemon_exit_code"] != 0:
        bad.append(f"daemon exit code {s['daemon_exit_code']}")
    if s["workers_left"]:
        bad.append(f"worker processes left behind: {s['workers_left']}")
    pool = s.get("pool")
    if pool is not None and not pool["ok"]:
        bad.append(f"supervisor.Pool part failed: {pool}")
    if bad:
        return bad, False
    notes = [f"all {s['submitted']} tasks answered exactly once, clean stop"]
    if pool is not None:
        notes.append(f"Pool: all {pool['items']} map results right after a worker's SIGKILL")
    return notes, True


def summarize(args: argparse.Namespace, cfg: Config, tally: Tally, poison: list[tuple[int, str]],
              w: Watch, killed: list[int], stats: dict[str, Any],
              elapsed: float) -> dict[str, Any]:
    o = outcome(tally, poison)
    failed = sum(e["count"] for e in o["failed_by_type"].values())
    submitted = len(tally.futures)
    for p in o["poison"]:
        p["quarantined"] = p["id"] in w.quarantined_ids
    return {
        "tasks": args.tasks,
        "workers": cfg.worker_count,
        "chaos_interval": args.chaos_interval,
        "submitted": submitted,
        "succeeded": o["succeeded"],
        "failed": failed,
        "failed_by_type": o["failed_by_type"],
        "poison": o["poison"],
        "retried": w.kinds["task.retried"],
        "workers_killed": len(killed),
        "workers_exited": w.kinds["worker.exited"],
        "workers_restarted": w.kinds["worker.started"],
        "backoffs": w.kinds["worker.backoff"],
        "fatal": w.kinds["worker.fatal"],
        "quarantined": w.kinds["task.quarantined"],
        "lost": sum(1 for r in tally.resolutions if r != 1),
        "duplicates": sum(1 for c in w.result_ids.values() if c > 1),
        "published_results": sum(w.result_ids.values()),
        "published_missing": max(0, submitted - len(w.result_ids)),
        "publish_gaps": w.gaps,
        "wrong_values": o["wrong_values"],
        "stream_seconds": round(elapsed, 3),
        "throughput": round(submitted / max(elapsed, 1e-9), 1),
        "daemon_stats": stats,
    }
