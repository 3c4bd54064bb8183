"""The demo's chaos and its witness: kill workers, watch the publisher.

The chaos thread (``chaos_main``) SIGKILLs a RUNNING worker by pid every
so often; the watch thread (``watch_main``) subscribes to the publisher and
records every event and published result id in a ``Watch``.
``subscribe_handshake`` waits until that subscription is live, and
``settle`` lets the daemon recover before the summary is judged. Why the
chaos keeps to a restart budget is told in ``supervisor.demo``'s docstring.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from supervisor.client import Subscriber
from supervisor.config import Config
from supervisor.ctl import connection as ctlclient
from supervisor.demo.daemon import CannotStart, Workers


# ============================================================ watch (events)
@dataclass
class Watch:
    """What the publisher told us; written by the watch thread only."""

    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    result_ids: collections.Counter[str] = field(default_factory=collections.Counter)
    quarantined_ids: set[str] = field(default_factory=set)
    deaths: dict[int, collections.deque[float]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque))
    gaps: int = 0
    subscribed: threading.Event = field(default_factory=threading.Event)


def watch_main(endpoint: str, w: Watch, workers: Workers, stop: threading.Event) -> None:
    with Subscriber(endpoint, topics=["event.", "result."]) as sub:
        while not stop.is_set():
            msg = sub.recv(timeout=0.1)
            if msg is None:
                continue
            body = msg.body
            if msg.topic.startswith("result."):
                for r in body.get("results", []):
                    w.result_ids[r.get("id")] += 1
                continue
            kind = msg.topic[len("event."):]
            w.kinds[kind] += 1
            if kind == "supervisor.resumed":
                w.subscribed.set()
            elif kind == "worker.exited":
                w.deaths[body.get("slot", -1)].append(time.monotonic())
            elif kind == "worker.spawned" and body.get("pid"):
                workers.remember(body["pid"])
            elif kind == "task.quarantined":
                w.quarantined_ids.add(body.get("id", ""))
            w.gaps = sum(sub.gaps.values())


# ===================================================================== chaos
def kill_worker(pid: int, daemon_pid: int) -> bool:
    """SIGKILL ``pid`` if it is still one of the daemon's descendants.

    Where Linux offers a pidfd, it pins the process before the ancestry
    check, so a pid recycled since the status reply can never be hit.
    """
    fd = None
    try:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except (AttributeError, OSError):
            fd = None  # no pidfds here: the ancestry check must do
        if daemon_pid not in {p.pid for p in psutil.Process(pid).parents()}:
            return False
        if fd is None:
            os.kill(pid, signal.SIGKILL)
        else:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except (ProcessLookupError, psutil.Error):
        return False
    finally:
        if fd is not None:
            os.close(fd)


def chaos_main(cfg: Config, workers: Workers, interval: float, rng: random.Random,
               w: Watch, killed: list[int], stop: threading.Event) -> None:
    budget = max(1, cfg.restart.max_restarts - 4)
    period = cfg.restart.period
    while True:
        try:
            status = ctlclient.call(cfg.control_endpoint, "status", timeout=1.0)
        except (ctlclient.Unreachable, ctlclient.ControlError):
            status = []
        now = time.monotonic()
        victims = []
        for s in status:
            if not s["pid"]:
                continue
            workers.remember(s["pid"])
            recent = sum(1 for t in list(w.deaths.get(s["slot"], ())) if now - t < period)
            if s["state"] == "RUNNING" and recent < budget:
                victims.append(s["pid"])
        if victims:
            pid = rng.choice(victims)
            if kill_worker(pid, workers.daemon_pid):
                killed.append(pid)
        if stop.wait(interval):
            return


# ================================================================= handshake
def subscribe_handshake(cfg: Config, w: Watch) -> None:
    """Wait until our subscription reaches the publisher.

    Subscriptions travel asynchronously; ``resume`` (a no-op on a daemon
    that is not paused) publishes an event, so repeat it until one arrives.
    """
    deadline = time.monotonic() + 10
    while not w.subscribed.wait(0.1):
        ctlclient.call(cfg.control_endpoint, "resume")
        if time.monotonic() > deadline:
            raise CannotStart("the subscriber never received the publisher's events")


def settle(cfg: Config, w: Watch, submitted: int) -> dict[str, Any]:
    """Let killed workers come back and the last results be published;
    return the daemon's stats (empty if it no longer answers)."""
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            status = ctlclient.call(cfg.control_endpoint, "status", timeout=1.0)
            if (all(s["state"] == "RUNNING" for s in status)
                    and w.kinds["worker.started"] >= w.kinds["worker.exited"]
                    and sum(w.result_ids.values()) >= submitted):
                break
            time.sleep(0.05)  # polling another process's state
        stats: dict[str, Any] = ctlclient.call(cfg.control_endpoint, "stats", timeout=1.0)
        return stats
    except (ctlclient.Unreachable, ctlclient.ControlError):
        return {}
