"""Credit bookkeeping and the routing decision (no daemon: each Link's
socket connects to an ipc path nobody listens on, and nothing is sent
except the pings these tests make, which wait in the socket's queue)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from supervisor.client.links import KEEP, REATTACH, RESTARTED, Link
from supervisor.client.routing import MAX_BATCH, pick
from supervisor.client.wire import Pong


@pytest.fixture
def links(tmp_path: Path) -> Iterator[list[Link]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    made = [Link(ctx, f"ipc://{tmp_path}/d{i}") for i in range(3)]
    yield made
    for link in made:
        link.close()
    ctx.term()


def pong(ref: int, capacity: int, held: int, boot: str = "b1") -> Pong:
    return Pong("0", 1, boot, 2, ref, 0, max(0, capacity - held), capacity, held)


def send(link: Link, *ids: str) -> None:
    """What Engine._send records for a batch."""
    link.ids.update(ids)
    link.sent += len(ids)


def test_a_daemon_never_heard_from_gets_nothing(links: list[Link]) -> None:
    assert all(link.room() < 0 for link in links)
    assert pick(links, 10) is None


def test_room_is_the_pong_s_credit_less_what_we_sent_since_plus_what_came_back(
        links: list[Link]) -> None:
    link = links[0]
    ref = link.ping(0.0)
    assert link.on_pong(pong(ref, capacity=6, held=2)) == KEEP  # 2 of other clients
    assert link.room() == 4
    send(link, "a", "b", "c")
    assert link.room() == 1
    link.ids.discard("a")  # a result came back
    assert link.room() == 2


def test_tasks_sent_after_the_ping_are_not_counted_as_held_by_it(links: list[Link]) -> None:
    """The daemon counted what reached it before the ping; what we sent
    after it is still ours to subtract, not part of ``held``."""
    link = links[0]
    send(link, "a", "b")  # reached the daemon: in its held
    ref = link.ping(0.0)
    send(link, "c")  # after the ping: not in held
    link.on_pong(pong(ref, capacity=6, held=2 + 1))  # ours a, b and one of another client
    assert link.room() == 6 - 1 - 3  # capacity - others - ours


def test_a_new_boot_restarts_and_a_lost_ping_reattaches(links: list[Link]) -> None:
    link = links[0]
    link.on_pong(pong(link.ping(0.0), 6, 0))
    first, second = link.ping(1.0), link.ping(1.1)
    assert first < second
    assert link.on_pong(pong(second, 6, 0)) == REATTACH  # first never answered
    send(link, "a")
    assert link.on_pong(pong(link.ping(2.0), 6, 0, boot="b2")) == RESTARTED
    assert link.room() == 6 - 1  # the new run holds none of ours: counted 0


def test_the_batch_goes_to_the_most_room_capped_by_room_and_share(links: list[Link]) -> None:
    for link, cap in zip(links, (3, 9, 6), strict=True):
        link.on_pong(pong(link.ping(0.0), cap, 0))
    assert pick(links, 100) == (links[1], 9)  # most room, at most its room
    assert pick(links, 6) == (links[1], 2)  # its share of a short queue
    send(links[1], *[f"t{i}" for i in range(9)])
    assert pick(links, 100) == (links[2], 6)
    links[2].stall()  # refused us for draining: nothing until its next pong
    assert pick(links, 100) == (links[0], 3)
    links[0].forget_pings()  # declared dead
    assert pick(links, 100) is None


def test_a_batch_never_exceeds_max_batch(links: list[Link]) -> None:
    link = links[0]
    link.on_pong(pong(link.ping(0.0), 10 * MAX_BATCH, 0))
    assert pick(links, 10 * MAX_BATCH) == (link, MAX_BATCH)
