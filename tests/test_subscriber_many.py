"""A Subscriber of several publishers: sequence numbers per daemon."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import msgspec
import zmq

from supervisor.client import Client, Subscriber
from tests.conftest import Daemon, StartDaemon, free_tcp_port, wait_until

ECHO = "workers.builtin:echo"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


class FakePublisher:
    """A PUB socket standing in for a daemon, sending chosen seq numbers."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, boot: str) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.endpoint = endpoint
        self.boot = boot

    def send(self, seq: int, topic: str = "event.x") -> None:
        body = {"seq": seq, "gseq": seq, "boot": self.boot, "kind": topic}
        self.sock.send_multipart([topic.encode(), msgspec.msgpack.encode(body)])


def joined(sub: Subscriber, pubs: list[FakePublisher]) -> None:
    """Publish on a side topic until each publisher's message arrives."""
    seen: set[str] = set()

    def all_seen() -> bool:
        for p in pubs:
            if p.endpoint not in seen:
                p.sock.send_multipart([b"sync", msgspec.msgpack.encode({})])
        while (msg := sub.recv(0.02)) is not None:
            seen.add(msg.endpoint)
        return seen >= {p.endpoint for p in pubs}

    wait_until(all_seen, 10, message="subscriptions never became active")


def collect(sub: Subscriber, n: int, timeout: float = 10.0) -> list[tuple[str, int]]:
    """The next ``n`` messages as (endpoint, seq), within ``timeout``."""
    got: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        msg = sub.recv(max(0.0, deadline - time.monotonic()))
        assert msg is not None, f"only {len(got)} of {n} messages within {timeout}s: {got}"
        got.append((msg.endpoint, msg.body["seq"]))
    return got


def test_interleaved_publishers_are_not_gaps_and_a_real_gap_is_charged_to_its_daemon(
        tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a = FakePublisher(ctx, f"ipc://{tmp_path}/a", "bootA")
    b = FakePublisher(ctx, f"ipc://{tmp_path}/b", "bootB")
    sub = Subscriber([a.endpoint, b.endpoint], topics=["event.", "sync"])
    try:
        joined(sub, [a, b])
        for seq in (1, 2, 3):
            a.send(seq)
            b.send(seq)
        a.send(4)
        a.send(7)  # a skipped 5 and 6
        b.send(4)
        got = collect(sub, 9)
        assert Counter(ep for ep, _ in got) == {a.endpoint: 5, b.endpoint: 4}
        assert sub.daemon_gaps == {a.endpoint: 2, b.endpoint: 0}
        assert sub.gaps == {"event.x": 2}
        # b restarts: a new boot starts again at 1, which is no gap
        b.boot = "bootB2"
        b.send(1)
        b.send(2)
        assert collect(sub, 2) == [(b.endpoint, 1), (b.endpoint, 2)]
        assert sub.restarts == {a.endpoint: 0, b.endpoint: 1}
        assert sub.daemon_gaps[b.endpoint] == 0
    finally:
        sub.close()
        a.sock.close()
        b.sock.close()
        ctx.term()


def test_three_daemons_publish_interleaved_sequences_without_false_gaps(
        start_daemon: StartDaemon) -> None:
    """One Subscriber on three real publishers while one client spreads work
    over the three: each result arrives tagged with its publisher, every
    daemon's sequence is whole (no gaps), and all three took part."""
    daemons: list[Daemon] = [start_daemon(endpoints={
        "intake": f"tcp://{h}:{free_tcp_port()}", "publisher": f"tcp://{h}:{free_tcp_port()}",
    }) for h in HOSTS]
    sub = Subscriber([d.publisher for d in daemons], topics=["result."])
    singles = [Client(d.intake) for d in daemons]
    try:
        # Subscriptions are asynchronous: a marker from each daemon proves its SUB is active.
        seen: set[str] = set()

        def markers_from_all() -> bool:
            for d, c in zip(daemons, singles, strict=True):
                if d.publisher not in seen:
                    c.submit(ECHO, "marker").result(10)
            while (msg := sub.recv(0.02)) is not None:
                seen.add(msg.endpoint)
            return seen >= {d.publisher for d in daemons}

        wait_until(markers_from_all, 20, interval=0.05, message="subscriptions never active")
        with Client([d.intake for d in daemons]) as fleet:
            assert fleet.map(ECHO, range(600), timeout=60) == list(range(600))
        got: dict[int, str] = {}
        deadline = time.monotonic() + 20
        while len(got) < 600 and time.monotonic() < deadline:
            msg = sub.recv(0.2)
            if msg is None:
                continue
            for r in msg.body["results"]:
                if isinstance(r["value"], int):
                    assert r["value"] not in got, f"{r['value']} published twice"
                    got[r["value"]] = msg.endpoint
        assert sorted(got) == list(range(600))
        assert set(got.values()) == {d.publisher for d in daemons}  # all three ran some
        assert sub.daemon_gaps == {d.publisher: 0 for d in daemons}
        assert sub.gaps == {} and sub.restarts == {d.publisher: 0 for d in daemons}
    finally:
        for c in singles:
            c.terminate()
        sub.close()
