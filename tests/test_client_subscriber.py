"""The publisher's heartbeat makes the loss of a topic's last messages
visible (issue 9, item 15)."""

from __future__ import annotations

from supervisor.client import Subscriber
from tests.conftest import Daemon, free_tcp_port

ECHO = "workers.builtin:echo"
TOPIC = "result." + ECHO


def test_the_heartbeat_carries_each_topic_s_last_seq(daemon: Daemon) -> None:
    """After some results, a heartbeat names the result topic with the seq
    of the last result message the subscriber received: nothing lost."""
    client = daemon.client()
    sub = daemon.subscribe(TOPIC, "event.heartbeat", client=client)
    assert client.map(ECHO, range(50), timeout=10) == list(range(50))
    fence = sub.wait_for(lambda m: m.topic == TOPIC and any(
        r.get("value") == 49 for r in m.body["results"]), what="the last result")
    beat = sub.event("heartbeat", timeout=5, after=fence.body)
    last_seen = max(m.body["seq"] for m in sub.seen if m.topic == TOPIC)
    assert beat["topics"][TOPIC] >= last_seen
    sub.drain()
    assert sub.sub.gaps == {}


def test_a_subscriber_counts_a_lost_tail_from_the_heartbeat() -> None:
    """Seq 5 was the last message seen on a topic; a heartbeat says the
    topic is at 7: two messages were lost, though none came after them.
    Topics never seen (joined late) are not counted."""
    sub = Subscriber(f"tcp://127.0.0.1:{free_tcp_port()}", topics=[TOPIC])
    try:
        sub._seen("b1", TOPIC, 5)
        sub._seen("b1", TOPIC, 7, tail=True)
        assert sub.gaps == {TOPIC: 2}
        sub._seen("b1", TOPIC, 7, tail=True)  # the next heartbeat: nothing new
        sub._seen("b1", TOPIC, 8)
        assert sub.gaps == {TOPIC: 2}
    finally:
        sub.close()
