"""Which daemon gets which task: credit, liveness and hand-over (pure).

No sockets, no threads, no clock of its own: the client's I/O thread
(supervisor/client/fleet.py) tells the Router what it heard and when, and
asks it where to send. So every decision is unit-tested in microseconds.

::

    pong(credit, capacity, held) --> Peer.capacity, Peer.others
    task sent to a peer  ----------> Peer.mine (+1: less credit)
    result for a task    ----------> Peer.mine (-1: credit back)
    nothing heard for dead_after --> Peer dead: its ``mine`` go back to
                                     the front of the client's queue, to
                                     be sent elsewhere under the same ids
    pong from a dead peer ---------> alive again, gets work again
    pong with a new boot ----------> the daemon restarted and forgot what
                                     it held: its ``mine`` go back too

Why credit is kept here rather than asked for before each send: a pong
gives the daemon's free room at one instant (``capacity - held``), and
from then on the client knows exactly what it sent there and what came
back. ``others`` (what other clients hold there) is the only part that
can go stale, and the next heartbeat refreshes it. Until a daemon has
answered once its credit is unknown and it gets nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Seconds between pings to each daemon, and of silence before a daemon is
# dead to this client. The defaults suit one LAN: three missed heartbeats.
HEARTBEAT = 0.5
DEAD_AFTER = 1.5


@dataclass(slots=True)
class Peer:
    """One daemon as this client sees it."""

    endpoint: str
    alive: bool = False  # answered, and not silent for dead_after since
    heard: float = 0.0  # monotonic time of its last message
    pinged: float = -1e18  # monotonic time of our last ping to it
    boot: str = ""  # its run; a new one means it restarted
    capacity: int = 0
    others: int = 0  # tasks it holds for other clients, as of the last pong
    # Our tasks it holds, in the order sent (a dict keeps it; a set would not).
    mine: dict[str, None] = field(default_factory=dict)
    sent_total: int = 0  # tasks ever sent there (for stats and tests)
    deaths: int = 0

    @property
    def credit(self) -> int:
        if not self.alive:
            return 0
        return max(0, self.capacity - self.others - len(self.mine))

    def snapshot(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint, "alive": self.alive, "boot": self.boot,
            "capacity": self.capacity, "credit": self.credit, "holding": len(self.mine),
            "sent": self.sent_total, "deaths": self.deaths,
        }


class Router:
    def __init__(self, endpoints: Iterable[str], *, heartbeat: float = HEARTBEAT,
                 dead_after: float = DEAD_AFTER) -> None:
        if heartbeat <= 0 or dead_after <= heartbeat:
            raise ValueError("need 0 < heartbeat < dead_after")
        self.peers = {ep: Peer(ep) for ep in endpoints}
        if not self.peers:
            raise ValueError("no endpoints")
        self.heartbeat = heartbeat
        self.dead_after = dead_after
        self._owner: dict[str, Peer] = {}  # task id -> the peer holding it
        self.moved = 0  # tasks handed back for another daemon, ever

    # ----------------------------------------------------------- hearing
    def heard(self, endpoint: str, now: float) -> None:
        """Any message from ``endpoint``: it is not silent."""
        self.peers[endpoint].heard = now

    def on_pong(self, endpoint: str, now: float, boot: str, capacity: int, held: int
                ) -> list[str]:
        """A pong; returns the ids to send again (the daemon restarted)."""
        peer = self.peers[endpoint]
        peer.heard = now
        back: list[str] = []
        if peer.boot and boot != peer.boot:
            back = self._release(peer)
        peer.boot = boot
        peer.alive = True
        peer.capacity = capacity
        peer.others = max(0, held - len(peer.mine))
        return back

    def on_result(self, task_id: str) -> None:
        """A task's result arrived (from whichever daemon): its credit is free."""
        peer = self._owner.pop(task_id, None)
        if peer is not None:
            peer.mine.pop(task_id, None)

    def stall(self, endpoint: str) -> None:
        """A send there failed: no credit until its next pong."""
        self.peers[endpoint].capacity = 0

    def forget(self, task_id: str) -> None:
        """The task is settled without a result (refused, cancelled)."""
        self.on_result(task_id)

    # ------------------------------------------------------------- time
    def expire(self, now: float) -> tuple[list[str], list[str]]:
        """Daemons silent past dead_after die; returns (their endpoints,
        the ids they held, to send elsewhere under the same ids)."""
        dead: list[str] = []
        back: list[str] = []
        for peer in self.peers.values():
            if peer.alive and now - peer.heard > self.dead_after:
                peer.alive = False
                peer.deaths += 1
                dead.append(peer.endpoint)
                back.extend(self._release(peer))
        return dead, back

    def pings_due(self, now: float) -> list[str]:
        due = [p.endpoint for p in self.peers.values() if now - p.pinged >= self.heartbeat]
        for ep in due:
            self.peers[ep].pinged = now
        return due

    def next_deadline(self, now: float) -> float:
        """When ``pings_due`` or ``expire`` next has something to do."""
        when = min(p.pinged + self.heartbeat for p in self.peers.values())
        for p in self.peers.values():
            if p.alive:
                when = min(when, p.heard + self.dead_after)
        return max(when, now)

    # ---------------------------------------------------------- routing
    def assign(self, ids: Iterable[str]) -> dict[str, list[str]]:
        """Place as many of ``ids`` (in order) as credit allows; returns
        endpoint -> ids to send there. Each next task goes to the daemon
        with the most credit left, so work spreads by free capacity."""
        out: dict[str, list[str]] = {}
        open_peers = [p for p in self.peers.values() if p.credit > 0]
        if not open_peers:
            return out
        room = {p.endpoint: p.credit for p in open_peers}
        for task_id in ids:
            ep = max(room, key=room.__getitem__)
            if room[ep] <= 0:
                break
            room[ep] -= 1
            peer = self.peers[ep]
            old = self._owner.get(task_id)
            if old is not None:
                old.mine.pop(task_id, None)
            self._owner[task_id] = peer
            peer.mine[task_id] = None
            peer.sent_total += 1
            out.setdefault(ep, []).append(task_id)
        return out

    def credit(self) -> int:
        return sum(p.credit for p in self.peers.values())

    def holder(self, task_id: str) -> str | None:
        peer = self._owner.get(task_id)
        return None if peer is None else peer.endpoint

    def _release(self, peer: Peer) -> list[str]:
        back = list(peer.mine)
        for task_id in back:
            self._owner.pop(task_id, None)
        peer.mine.clear()
        self.moved += len(back)
        return back
