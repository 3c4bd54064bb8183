"""A Subscriber of several publishers: sequence numbers per daemon."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import msgspec
import zmq

from supervisor.client import Client, Subscriber
from tests.conftest import StartDaemon, wait_until

ECHO = "workers.builtin:echo"


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
                body = {"boot": p.boot}
                p.sock.send_multipart([b"sync", msgspec.msgpack.encode(body)])
        while (msg := sub.recv(0.02)) is not None:
            seen.add(msg.endpoint)
        return seen >= {p.endpoint for p in pubs}

    wait_until(all_seen, 10, message="subscriptions never became active")


def collect(sub: Subscriber, n: int, timeout: float = 10.0) -> list[tuple[str, int]]:
    """The next ``n`` messages as (endpoint, seq), within ``timeout``."""
    got: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        msg = sub.recv(max(0.0, left))
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


def test_results_of_two_real_daemons_arrive_tagged_with_their_publisher(
        start_daemon: StartDaemon) -> None:
    d1, d2 = start_daemon(), start_daemon()
    sub = Subscriber([d1.publisher, d2.publisher], topics=["result."])
    c1, c2 = Client(d1.intake), Client(d2.intake)
    try:
        seen: dict[str, set[str]] = {d1.publisher: set(), d2.publisher: set()}

        def marker_from_both() -> bool:
            c1.submit(ECHO, "m1")
            c2.submit(ECHO, "m2")
            while (msg := sub.recv(0.02)) is not None:
                seen[msg.endpoint].update(str(r["value"]) for r in msg.body["results"])
            return "m1" in seen[d1.publisher] and "m2" in seen[d2.publisher]

        wait_until(marker_from_both, 15, interval=0.05)
        futs = [c.submit(ECHO, f"{i}-{n}") for i in range(100) for n, c in (("a", c1), ("b", c2))]
        for f in futs:
            f.result(10)
        want = {d1.publisher: {f"{i}-a" for i in range(100)},
                d2.publisher: {f"{i}-b" for i in range(100)}}
        got: dict[str, set[str]] = {d1.publisher: set(), d2.publisher: set()}
        deadline = time.monotonic() + 10
        while any(not want[ep] <= got[ep] for ep in want) and time.monotonic() < deadline:
            msg = sub.recv(0.2)
            if msg is not None:
                got[msg.endpoint].update(str(r["value"]) for r in msg.body["results"])
        for ep in want:
            assert want[ep] <= got[ep]
            assert not {v for v in got[ep] if v.endswith("-b" if ep == d1.publisher else "-a")}
        assert sub.daemon_gaps == {d1.publisher: 0, d2.publisher: 0}
    finally:
        c1.terminate()
        c2.terminate()
        sub.close()
