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

With several daemons a link also keeps the daemon's credit (routing.py):
each pong gives ``capacity - held``; from then on the client knows what
it sent there and what came back, so the room left for us is

    room = (capacity - held + ours it counted) - ours it holds now

where "ours it counted" are our tasks it held when it answered: what we
held there then, less what we sent after the ping (still on its way, so
not in ``held``). Sending lowers the room, a result raises it; only what
other clients do there goes stale, and the next pong refreshes it.
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

# What a pong asks of the link's tasks (Link.on_pong).
KEEP, REATTACH, RESTARTED = 0, 1, 2


# Room of a link whose credit is unknown (no pong yet, or since it was
# declared dead or refused us for draining): nothing is sent there.
STALLED = -(1 << 40)


class Link:
    __slots__ = ("endpoint", "sock", "boot", "ids", "pings", "ping_refs", "awaiting_since",
                 "next_ping", "down", "heard", "keys", "base", "capacity", "sent", "last_ping",
                 "deaths")

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str,
                 keys: ClientKeys | None = None, connect_ms: int = 0) -> None:
        self.endpoint = endpoint
        self.keys = keys
        self.sock = self.open(ctx, connect_ms)
        self.boot: str | None = None  # the run that answered our last pong
        self.ids: set[str] = set()  # pending tasks last sent here
        self.pings: dict[int, int] = {}  # outstanding ping ref -> self.sent when sent
        self.ping_refs = 0
        self.awaiting_since: float | None = None  # first ping not answered by anything
        self.next_ping = 0.0
        self.down = False  # declared silent (dead); cleared by anything heard
        self.heard = 0.0
        # Credit (several daemons only; see the module docstring).
        self.base = STALLED  # room = base - len(ids)
        self.capacity = 0  # as of the last pong
        self.sent = 0  # tasks ever sent here (re-sends too)
        self.last_ping = -1e18
        self.deaths = 0  # times declared dead (silent for dead_after)

    def open(self, ctx: zmq.Context[zmq.Socket[bytes]], connect_ms: int) -> zmq.Socket[bytes]:
        """A DEALER to the daemon. ``connect_ms`` (several daemons): give up
        a TCP connect or ZMTP handshake after that long and try again, so
        a host back from a partition is reached within about that time
        (else a connect waits on SYN retransmits, 1, 3, 7, 15 s...)."""
        endpoint, keys = self.endpoint, self.keys
        sock = ctx.socket(zmq.DEALER)
        if connect_ms:
            sock.setsockopt(zmq.CONNECT_TIMEOUT, connect_ms)
            sock.setsockopt(zmq.HANDSHAKE_IVL, connect_ms)
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
        return sock

    def ping(self, now: float) -> int:
        self.ping_refs += 1
        ref = self.ping_refs
        self.pings[ref] = self.sent
        self.last_ping = now
        if self.awaiting_since is None:
            self.awaiting_since = now
        self.sock.send(encoder.encode(Ping(ref)), zmq.NOBLOCK)
        return ref

    def on_heard(self, now: float) -> None:
        """Anything from the daemon shows it is alive."""
        self.heard = now
        self.awaiting_since = None
        self.down = False

    def on_pong(self, pong: Pong) -> int:
        """Record the pong and the credit it gives; KEEP, or what this link
        must do with its tasks: REATTACH (send them here again) or
        RESTARTED (a new run, which holds none of them)."""
        ref = pong.ref if isinstance(pong.ref, int) else 0
        lost = any(r < ref for r in self.pings)
        mark = self.pings.get(ref, self.sent)
        for r in [r for r in self.pings if r <= ref]:
            del self.pings[r]
        restarted = self.boot is not None and pong.boot != self.boot
        self.boot = pong.boot
        counted = 0 if restarted else max(0, len(self.ids) - (self.sent - mark))
        self.base = pong.capacity - pong.held + counted
        self.capacity = pong.capacity
        if restarted:
            return RESTARTED
        return REATTACH if lost or pong.dropped > 0 else KEEP

    def room(self) -> int:
        """Tasks we may still send here (several daemons; see above)."""
        return 0 if self.down else self.base - len(self.ids)

    def stall(self) -> None:
        """No room here until the next pong (it refused us for draining
        or pausing: its credit has changed since it last told us)."""
        self.base = STALLED

    def silent(self, now: float, after: float) -> bool:
        """Pinged ``after`` seconds ago and nothing at all came back since."""
        return self.awaiting_since is not None and now - self.awaiting_since >= after

    def forget_pings(self) -> None:
        self.pings.clear()
        self.awaiting_since = None
        self.down = True

    def die(self, ctx: zmq.Context[zmq.Socket[bytes]], connect_ms: int) -> None:
        """Silent for dead_after (several daemons): dead to us until it
        answers. A new socket (the caller re-registers it), so that
        nothing we queued for it (pings, tasks since moved elsewhere) is
        delivered when it returns."""
        self.forget_pings()
        self.base = STALLED
        self.deaths += 1
        self.sock.close(linger=0)
        self.sock = self.open(ctx, connect_ms)

    def close(self) -> None:
        self.sock.close(linger=0)
