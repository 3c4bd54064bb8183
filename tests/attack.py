"""Tools for the tests that attack a running phalanxd (chaos, fuzz, hostile tasks).

``Peer``      a raw DEALER on intake that submits in chunks and counts every
              ack and every result per id as it arrives on the wire, so a
              duplicate answer is seen even where the Python client would
              silently drop it.
``ResultTap`` a SUB socket read by its own thread (never slower than the
              publisher), counting published results per id and seq gaps.
``Killer``    a thread that SIGKILLs a random worker every ``interval``,
              aiming by pid taken from control ``status`` (never a group,
              never by name) and checking that the pid still belongs to the
              daemon's tree before firing.

Everything waits on a condition with a deadline; nothing sleeps to sync.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

import msgspec
import psutil
import zmq

ECHO = "workers.builtin:echo"
MiB = 1024 * 1024


def decode(body: bytes) -> Any:
    """MessagePack, even nested deeper than our own stack leaves room for
    (results of fuzzed arguments nested to the daemon's limit)."""
    try:
        return msgspec.msgpack.decode(body)
    except RecursionError:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(old + 2000)
        try:
            return msgspec.msgpack.decode(body)
        finally:
            sys.setrecursionlimit(old)


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def fd_count(pid: int) -> int:
    return int(psutil.Process(pid).num_fds())


class Peer:
    """A DEALER speaking the wire protocol, counting everything it receives."""

    def __init__(self, endpoint: str, ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
                 linger: int = 0) -> None:
        self._own_ctx = ctx is None
        self.ctx: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, linger)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(endpoint)
        self.results: Counter[str] = Counter()  # id -> results received
        self.failed: dict[str, dict[str, Any]] = {}  # id -> last failed result
        self.last: dict[str, dict[str, Any]] = {}  # id -> last result
        self.accepted: list[str] = []
        self.rejected: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.acks = 0
        self.other: list[dict[str, Any]] = []
        self.closed = False

    def send(self, obj: Any) -> None:
        self.sock.send(msgspec.msgpack.encode(obj))

    def submit(self, tasks: list[dict[str, Any]], ref: Any = None) -> None:
        body: dict[str, Any] = {"op": "submit", "tasks": tasks}
        if ref is not None:
            body["ref"] = ref
        self.send(body)

    def _take(self, msg: Any) -> None:
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "results":
            for res in msg["results"]:
                self.results[res["id"]] += 1
                self.last[res["id"]] = res
                if not res["ok"]:
                    self.failed[res["id"]] = res
        elif op == "ack":
            self.acks += 1
            self.accepted.extend(msg["accepted"])
            self.rejected.extend(msg["rejected"])
        elif op == "error":
            self.errors.append(msg)
        else:
            self.other.append(msg)

    def pump(self, timeout: float) -> bool:
        """Take in what arrives within ``timeout``; False if nothing came."""
        if not self.sock.poll(int(max(timeout, 0) * 1000)):
            return False
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            self._take(decode(frames[-1]))  # [body] or ["", body]

    def wait(self, predicate: Any, timeout: float, what: str, stall: float | None = None) -> None:
        """Pump until ``predicate()``; fail after ``timeout`` s, or after
        ``stall`` s without anything arriving."""
        deadline = time.monotonic() + timeout
        last_progress = time.monotonic()
        while not predicate():
            now = time.monotonic()
            if now >= deadline:
                raise AssertionError(f"after {timeout:g}s: {what}")
            if stall is not None and now - last_progress > stall:
                raise AssertionError(f"nothing arrived for {stall:g}s: {what}")
            if self.pump(min(deadline - now, 0.2)):
                last_progress = time.monotonic()

    def request(self, obj: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Send one request and return its immediate response (pong/ack/error)."""
        before = (self.acks, len(self.errors), len(self.other))
        self.send(obj)
        self.wait(lambda: (self.acks, len(self.errors), len(self.other)) != before,
                  timeout, f"no response to {obj!r:.200}")
        if len(self.errors) != before[1]:
            return self.errors[-1]
        if len(self.other) != before[2]:
            return self.other[-1]
        return {"op": "ack"}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
            if self._own_ctx:
                self.ctx.term()


def echo_round_trip(peer: Peer, timeout: float = 10.0) -> None:
    """ping, then one echo task answered correctly, on ``peer``."""
    pong = peer.request({"op": "ping"}, timeout)
    assert pong.get("op") == "pong", pong
    token = f"alive-{uuid.uuid4().hex}"
    peer.submit([{"task": ECHO, "id": token, "args": [token]}])
    peer.wait(lambda: peer.results[token], timeout, "echo round trip got no result")
    res = peer.last[token]
    assert res["ok"] and res["value"] == token and peer.results[token] == 1, res


class ResultTap(threading.Thread):
    """Count every published result per id, from a thread that always reads."""

    def __init__(self, endpoint: str, topics: tuple[str, ...] = ("result.",)) -> None:
        super().__init__(name="result-tap", daemon=True)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.sock.connect(endpoint)
        self.lock = threading.RLock()
        self.counts: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.gaps = 0
        self.messages = 0
        self._last: dict[tuple[str, bytes], int] = {}
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        sock = self.sock
        while not self._halt.is_set():
            if not sock.poll(50):
                continue
            while True:
                try:
                    topic, body = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = msgspec.msgpack.decode(body)
                key = (msg.get("boot", ""), topic)
                with self.lock:
                    self.messages += 1
                    last = self._last.get(key)
                    if last is not None and msg["seq"] > last + 1:
                        self.gaps += msg["seq"] - last - 1
                    self._last[key] = msg["seq"]
                    if topic.startswith(b"result."):
                        for res in msg.get("results", []):
                            self.counts[res["id"]] += 1
                    else:
                        self.events.append(msg)
        sock.close()

    def count(self, task_id: str) -> int:
        with self.lock:
            return self.counts[task_id]

    def sync(self, peer: Peer, timeout: float = 15.0) -> None:
        """Return once our subscription is live (a marker's result came back)."""
        deadline = time.monotonic() + timeout
        while True:
            marker = f"tap-{uuid.uuid4().hex}"
            peer.submit([{"task": ECHO, "id": marker, "args": [marker]}])
            until = min(deadline, time.monotonic() + 0.5)
            while time.monotonic() < until:
                if self.count(marker):
                    return
                peer.pump(0.02)
            if time.monotonic() >= deadline:
                raise AssertionError("subscription never became active")

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate(self):
                    return
            if time.monotonic() >= deadline:
                raise AssertionError(f"after {timeout:g}s: {what}")
            time.sleep(0.01)

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("kind") == kind]

    def close(self) -> None:
        self._halt.set()
        self.join(5)
        self.ctx.term()


def in_daemon_tree(pid: int, daemon_pid: int) -> psutil.Process | None:
    """The process ``pid`` if it is the daemon's child or grandchild (workers
    are forked by the forkserver, itself the daemon's child)."""
    try:
        proc = psutil.Process(pid)
        parent = proc.parent()
        if parent is None:
            return None
        if parent.pid == daemon_pid or parent.ppid() == daemon_pid:
            return proc
    except psutil.Error:
        pass
    return None


class Killer(threading.Thread):
    """SIGKILL a random worker (in one of ``states``) every ``interval`` seconds."""

    def __init__(self, control: str, daemon_pid: int, interval: float = 0.02,
                 seed: int | None = None, states: tuple[str, ...] = ("RUNNING",)) -> None:
        super().__init__(name="killer", daemon=True)
        self.control = control
        self.daemon_pid = daemon_pid
        self.interval = interval
        self.states = states
        self.rng = random.Random(seed)
        self.kills = 0
        self.killed: list[int] = []
        self.misses = 0  # the chosen pid was already gone or not ours
        self.rounds = 0
        self.idle = 0  # rounds with no RUNNING worker to aim at
        self._halt = threading.Event()

    def _status(self, sock: zmq.Socket[bytes]) -> list[dict[str, Any]] | None:
        sock.send(msgspec.msgpack.encode({"cmd": "status", "args": {}}))
        if not sock.poll(5000):
            return None
        reply = msgspec.msgpack.decode(sock.recv())
        return reply["result"] if reply.get("ok") else None

    def run(self) -> None:
        # One control connection for the whole run: a new context and
        # socket per round would cost more than the 20 ms between kills.
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.control)
        try:
            while not self._halt.wait(self.interval):
                slots = self._status(sock)
                if slots is None:
                    self.misses += 1
                    continue
                self.rounds += 1
                pids = [s["pid"] for s in slots if s["state"] in self.states and s["pid"]]
                if not pids:
                    self.idle += 1
                    continue
                proc = in_daemon_tree(self.rng.choice(pids), self.daemon_pid)
                if proc is None:
                    self.misses += 1
                    continue
                try:
                    proc.send_signal(signal.SIGKILL)  # psutil refuses a reused pid
                except psutil.Error:
                    self.misses += 1
                    continue
                self.kills += 1
                self.killed.append(proc.pid)
        finally:
            sock.close()
            ctx.term()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        assert not self.is_alive(), "killer thread did not stop"
