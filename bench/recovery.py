"""Crash recovery and poison tasks: how fast the line closes after a death.

Times are taken against ``time.time()`` read just before ``os.kill``, two
ways for each event: ``published`` uses the ``time`` field the daemon puts
in the event body (wall clock at publication; same machine, same clock),
``arrived`` uses the wall clock when our subscriber had the message in hand.
``published`` is the daemon's own reaction time and is the figure we report
against the targets; ``arrived - published`` is the publisher-to-subscriber
delivery cost.

The events, in the daemon's order for one death:
``worker.exited`` (sentinel seen, death accounted), ``task.retried`` (the
running task went back to the queue, dispatched in the same loop turn),
``worker.spawned`` (replacement process forked and alive),
``worker.started`` (replacement said hello: ready for work).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import (
    CRASH,
    STAMP_AND_DIE,
    STAMP_AND_SLEEP,
    WORKERS,
    PhalanxUnderTest,
    say,
)
from bench.stats import scaled, summary
from supervisor.client import Client, Message, Subscriber, TaskError

Matcher = Callable[[Message], bool]


class EventTap:
    """A Subscriber on ``event.`` that has provably joined (no slow-joiner loss)."""

    def __init__(self, d: PhalanxUnderTest) -> None:
        self.sub = Subscriber(d.publisher, topics=["event."])
        deadline = time.perf_counter() + 10.0
        while True:  # 'resume' is harmless (intake is not paused) and publishes an event
            d.ctl.call("resume")
            msg = self.sub.recv(timeout=0.05)
            while msg is not None and msg.topic != "event.supervisor.resumed":
                msg = self.sub.recv(timeout=0.05)
            if msg is not None:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError("subscriber never received an event")
        self.drain()

    def drain(self) -> list[Message]:
        out = []
        while (msg := self.sub.recv(timeout=0)) is not None:
            out.append(msg)
        return out

    def collect(self, want: dict[str, Matcher], timeout: float = 10.0
                ) -> dict[str, tuple[dict[str, Any], float]]:
        """Receive until each matcher has matched once; (body, arrival time) each."""
        got: dict[str, tuple[dict[str, Any], float]] = {}
        deadline = time.perf_counter() + timeout
        while len(got) < len(want):
            left = deadline - time.perf_counter()
            msg = self.sub.recv(timeout=max(left, 0.0)) if left > 0 else None
            if msg is None:
                raise TimeoutError(f"events not seen within {timeout:g}s: {sorted(set(want) - set(got))}")
            arrived = time.time()
            for name, match in want.items():
                if name not in got and match(msg):
                    got[name] = (msg.body, arrived)
        return got

    def close(self) -> None:
        self.sub.close()


def _slot_event(kind: str, slot: int) -> Matcher:
    topic = f"event.{kind}"
    return lambda m: m.topic == topic and m.body.get("slot") == slot


def _delays(got: dict[str, tuple[dict[str, Any], float]], t_kill: float) -> dict[str, dict[str, float]]:
    return {
        name: {"published": (body["time"] - t_kill) * 1e3, "arrived": (arrived - t_kill) * 1e3}
        for name, (body, arrived) in got.items()
    }


def kill_idle(d: PhalanxUnderTest, tap: EventTap, slot: int) -> dict[str, dict[str, float]]:
    old = d.ctl.status()[slot]["pid"]
    tap.drain()
    t_kill = time.time()
    os.kill(old, signal.SIGKILL)
    got = tap.collect({
        "exited": _slot_event("worker.exited", slot),
        "spawned": _slot_event("worker.spawned", slot),
        "started": _slot_event("worker.started", slot),
    })
    if got["started"][0].get("pid") == old:
        raise RuntimeError("replacement worker has the old pid")
    return _delays(got, t_kill)


def kill_busy(d: PhalanxUnderTest, tap: EventTap, c: Client, hold: float, stamp: Path
              ) -> dict[str, dict[str, float]]:
    """Kill a worker while it runs a sleep: proven running by the task's own
    stamp, because ``status`` shows a task as current as soon as the slot
    holds it, and a worker killed before it started the task owes nothing
    (the task is requeued uncharged: no task.retried)."""
    stamp.unlink(missing_ok=True)
    fut = c.submit(STAMP_AND_SLEEP, str(stamp), hold)
    deadline = time.perf_counter() + 5.0
    while not stamp.exists() or not stamp.read_text().endswith("\n"):
        if time.perf_counter() > deadline:
            raise TimeoutError("the sleep task never started")
        time.sleep(0.0002)
    pid = int(stamp.read_text().split()[0])
    slots = [s for s in d.ctl.status() if s["pid"] == pid]
    if not slots or not slots[0]["current"]:
        raise RuntimeError(f"no slot shows worker {pid} running the task")
    slot, task_id = slots[0]["slot"], slots[0]["current"]["id"]
    tap.drain()
    t_kill = time.time()
    os.kill(pid, signal.SIGKILL)
    got = tap.collect({
        "exited": _slot_event("worker.exited", slot),
        "retried": lambda m: m.topic == "event.task.retried" and m.body.get("id") == task_id,
        "spawned": _slot_event("worker.spawned", slot),
        "started": _slot_event("worker.started", slot),
    })
    value = fut.result(timeout=hold + 10.0)
    if value != hold:
        raise RuntimeError(f"retried task returned {value!r}, expected {hold!r}")
    return _delays(got, t_kill)


def _summarise(runs: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in runs[0]:
        out[name] = {
            how: scaled(summary([r[name][how] for r in runs]), 1.0, 3)
            for how in ("published", "arrived")
        }
    return out


def crash_recovery(d: PhalanxUnderTest, reps: int, hold: float) -> dict[str, Any]:
    tap = EventTap(d)
    try:
        idle = []
        for i in range(reps):
            d.ctl.wait_all_running()
            idle.append(kill_idle(d, tap, i % WORKERS))
            r = idle[-1]
            say(f"crash (idle worker) {i + 1}/{reps}: exited {r['exited']['published']:.2f}"
                f"  spawned {r['spawned']['published']:.2f}  started {r['started']['published']:.2f} ms")
        busy = []
        with Client(d.intake) as c, tempfile.TemporaryDirectory(prefix="phalanx-bench-stamp-") as tmp:
            for i in range(reps):
                d.ctl.wait_all_running()
                busy.append(kill_busy(d, tap, c, hold, Path(tmp) / "stamp"))
                r = busy[-1]
                say(f"crash (task in flight) {i + 1}/{reps}: exited {r['exited']['published']:.2f}"
                    f"  retried {r['retried']['published']:.2f}  spawned {r['spawned']['published']:.2f}"
                    f"  started {r['started']['published']:.2f} ms")
    finally:
        tap.close()
    return {"unit": "ms after os.kill", "idle_worker": _summarise(idle),
            "task_in_flight": _summarise(busy), "reps": reps, "task": f"{STAMP_AND_SLEEP}(path, {hold})"}


def _poison_once(d: PhalanxUnderTest, tap: EventTap, c: Client, task: str, *args: Any
                 ) -> tuple[str, float, float, float, list[Message]]:
    """Submit a task that kills its worker: (error type, submit, error, all RUNNING) times."""
    d.ctl.wait_all_running()
    tap.drain()
    wall0 = time.time()
    t0 = time.perf_counter()
    fut = c.submit(task, *args)
    try:
        fut.result(timeout=30.0)
        raise RuntimeError(f"{task} returned a result")
    except TaskError as exc:
        t_err = time.perf_counter()
        kind = exc.type
    t_up = d.ctl.wait_all_running()
    return kind, wall0, (t_err - t0) * 1e3, (t_up - t0) * 1e3, tap.drain()


def _timeline(seen: list[Message], wall0: float, error_ms: float,
              stamps: list[tuple[int, float]]) -> list[tuple[str, Any, float]]:
    """(what, slot or pid, ms after submit), in time order."""
    rows: list[tuple[str, Any, float]] = [
        (m.topic.removeprefix("event."), m.body.get("slot"), round((m.body["time"] - wall0) * 1e3, 2))
        for m in seen if "time" in m.body
    ]
    rows += [("attempt started, pid", pid, round((t - wall0) * 1e3, 2)) for pid, t in stamps]
    rows.append(("error at client", None, round(error_ms, 2)))
    return sorted(rows, key=lambda r: r[2])


def poison(d: PhalanxUnderTest, reps: int, traced: int = 2) -> dict[str, Any]:
    """``reps`` tries of crash('kill'), then ``traced`` tries of a task that
    also stamps when each attempt started (diagnostic timelines only)."""
    to_error, to_running, from_submit = [], [], []
    kinds: list[str] = []
    timelines = []
    tap = EventTap(d)
    try:
        with Client(d.intake) as c:
            for i in range(reps):
                kind, wall0, err_ms, up_ms, seen = _poison_once(d, tap, c, CRASH, "kill")
                kinds.append(kind)
                to_error.append(err_ms)
                to_running.append(up_ms - err_ms)
                from_submit.append(up_ms)
                topics = [m.topic for m in seen]
                say(f"poison {i + 1}/{reps}: {kind} after {err_ms:.1f} ms, all RUNNING"
                    f" {up_ms - err_ms:.1f} ms later ({topics.count('event.worker.exited')} worker deaths,"
                    f" {topics.count('event.task.retried')} retries)")
            with tempfile.TemporaryDirectory(prefix="phalanx-bench-stamp-") as tmp:
                for i in range(traced):
                    path = Path(tmp) / f"stamps-{i}"
                    _, wall0, err_ms, _, seen = _poison_once(d, tap, c, STAMP_AND_DIE, str(path))
                    stamps = [(int(p), float(t)) for p, t in
                              (line.split() for line in path.read_text().splitlines())]
                    timelines.append(_timeline(seen, wall0, err_ms, stamps))
    finally:
        tap.close()
    return {
        "unit": "ms",
        "task": f"{CRASH}('kill'), default max_attempts",
        "error_types": sorted(set(kinds)),
        "submit_to_error": scaled(summary(to_error), 1.0, 3),
        "error_to_all_running": scaled(summary(to_running), 1.0, 3),
        "submit_to_all_running": scaled(summary(from_submit), 1.0, 3),
        "traced_timelines": timelines,
        "traced_note": f"{traced} extra tries of {STAMP_AND_DIE} (same death, plus a stamp when each "
                       "attempt starts): (what, slot or pid, ms after submit), not in the figures",
    }

