"""One daemon as the client sees it: its own socket, what it holds, whether
it answers (the heartbeat), and which run of it we are talking to.

Why one DEALER per endpoint rather than one socket connected to all: a
client must know which daemon holds which task to move that daemon's work
when it restarts or goes silent, and pongs from two daemons on one socket
alternate boots, which looks like a restart every second.

When a link re-attaches (sends every task it holds again, same ids):

* its daemon answers a ping with another ``boot``: a new run, which
  forgot what the old one held;
* a pong answers a later ping while an earlier one was never answered:
  what was sent around the lost ping may have been lost with it (the
  daemon died before answering its first ping, say);
* a pong says ``dropped > 0``: the daemon's send queue to us was full and
  it dropped replies (we stopped reading for a while).

Re-sending is always safe: the daemon treats a known id as the same task
(one run, one result per submitter) and answers a finished one from its
result cache.
"""

from __future__ import annotations

import os

import zmq

from supervisor.client.wire import Ping, Pong, encoder
from supervisor.curve import ClientKeys

# Random, unpublished routing ids: 16 bytes from os.urandom cannot be
# guessed from anything the daemon publishes (task ids are unrelated), so
# another local user cannot take over our connection with ROUTER_HANDOVER.
ROUTING_ID_BYTES = 16


class Link:
    __slots__ = ("endpoint", "sock", "boot", "ids", "pings", "ping_refs", "awaiting_since",
                 "next_ping", "down", "heard")

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str,
                 keys: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        sock = ctx.socket(zmq.DEALER)
        if keys is not None:  # CURVE to a daemon beyond loopback (supervisor/curve.py)
            keys.apply(sock)
        # (A leading zero byte is reserved by ZeroMQ for ids it makes itself.)
        sock.setsockopt(zmq.ROUTING_ID, b"r" + os.urandom(ROUTING_ID_BYTES - 1))
        sock.setsockopt(zmq.LINGER, 0)
        # Unbounded here on purpose: the window (window.py) bounds what we
        # send, and what comes back is what we asked for.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.connect(endpoint)
        self.sock = sock
        self.boot: str | None = None  # the run that answered our last pong
        self.ids: set[str] = set()  # pending tasks last sent here
        self.pings: dict[int, float] = {}  # outstanding ping ref -> when sent
        self.ping_refs = 0
        self.awaiting_since: float | None = None  # first ping not answered by anything
        self.next_ping = 0.0
        self.down = False  # declared silent; used only when no other link is up
        self.heard = 0.0

    def ping(self, now: float) -> int:
        self.ping_refs += 1
        ref = self.ping_refs
        self.pings[ref] = now
        if self.awaiting_since is None:
            self.awaiting_since = now
        self.sock.send(encoder.encode(Ping(ref)), zmq.NOBLOCK)
        return ref

    def on_heard(self, now: float) -> None:
        """Anything from the daemon shows it is alive."""
        self.heard = now
        self.awaiting_since = None
        self.down = False

    def on_pong(self, pong: Pong) -> bool:
        """Record the pong; True if this link must re-attach its tasks."""
        ref = pong.ref if isinstance(pong.ref, int) else 0
        lost = any(r < ref for r in self.pings)
        for r in [r for r in self.pings if r <= ref]:
            del self.pings[r]
        restarted = self.boot is not None and pong.boot != self.boot
        self.boot = pong.boot
        return lost or restarted or pong.dropped > 0

    def silent(self, now: float, after: float) -> bool:
        """Pinged ``after`` seconds ago and nothing at all came back since."""
        return self.awaiting_since is not None and now - self.awaiting_since >= after

    def forget_pings(self) -> None:
        self.pings.clear()
        self.awaiting_since = None
        self.down = True

    def close(self) -> None:
        self.sock.close(linger=0)
