"""A client that stops reading gets every result once it resumes, and no
other local user can take its connection over (issue 9, items 5 and 9)."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.client import Client
from tests.conftest import StartDaemon, free_tcp_port, wait_until

ECHO = "workers.builtin:echo"
SLEEP = "workers.builtin:sleep"

# Keeps both workers busy for a while, submits N echo tasks of 4 KB
# results behind them, and prints how many results it got and how many
# tasks it re-sent (the test stops it meanwhile).
STOPPED_CLIENT = """
import sys
from supervisor.client import Client
n = int(sys.argv[2])
with Client(sys.argv[1]) as c:
    gate = [c.submit("workers.builtin:sleep", 1.0) for _ in range(2)]
    futs = [c.submit("workers.builtin:echo", "x" * 4096) for _ in range(n)]
    got = sum(1 for f in futs if f.result(60) == "x" * 4096)
    print(got, c.resubmitted, flush=True)
"""


def test_a_client_that_stopped_reading_gets_every_result(start_daemon: StartDaemon) -> None:
    """The daemon may queue only 5 reply messages for a client: with the
    client SIGSTOPped while 3000 results of 4 KB come back, replies are
    dropped at the daemon; the next pong says so and the client re-attaches
    by id (the results come from the daemon's result cache)."""
    n = 3000
    d = start_daemon(tasks={"max_queued_replies": 5, "result_cache": 10_000})
    proc = subprocess.Popen([sys.executable, "-c", STOPPED_CLIENT, d.intake, str(n)],
                            stdout=subprocess.PIPE, text=True, process_group=0)
    try:
        wait_until(lambda: d.stats()["accepted"] >= n + 2, 30,
                   message="the client's tasks never all arrived")
        os.kill(proc.pid, signal.SIGSTOP)  # the sleeps hold the echoes back meanwhile
        wait_until(lambda: d.stats()["succeeded"] >= n + 2, 60,
                   message=lambda: f"daemon finished only {d.stats()['succeeded']}")
        wait_until(lambda: d.stats()["unroutable_replies"] > 0, 10,
                   message="the daemon never had to drop a reply")
        os.kill(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=60)
        got, resubmitted = map(int, out.split())
        assert got == n
        assert resubmitted > 0
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# Another user connects with the routing ids an attacker could derive
# from what is published (the old scheme: "c-" + the task-id prefix) and
# pings on each; it exits 0 when it got its own pongs and nothing else.
HIJACKER = """
import os, sys
import zmq, msgspec
uid, gid = int(sys.argv[1]), int(sys.argv[2])
os.setgroups([]); os.setgid(gid); os.setuid(uid)
assert os.geteuid() == uid
endpoint, prefix = sys.argv[3], sys.argv[4]
ctx = zmq.Context()
other = 0
for rid in (b"c-" + prefix.encode(), prefix.encode(), b"r" + prefix.encode()):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.ROUTING_ID, rid)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send(msgspec.msgpack.encode({"op": "ping"}))
    while s.poll(2000):
        msg = msgspec.msgpack.decode(s.recv())
        if msg.get("op") != "pong":
            other += 1
    s.close()
ctx.term()
sys.exit(3 if other else 0)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_another_user_cannot_take_over_a_client(start_daemon: StartDaemon, tmp_path: Path
                                               ) -> None:
    """The victim's routing ids are random and unrelated to its published
    task ids: a second local user connecting with ids derived from them
    (ROUTER_HANDOVER is on) gets only its own pongs, and every one of the
    victim's results still reaches the victim."""
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    d = start_daemon(endpoints={"intake": endpoint})
    nobody = pwd.getpwnam("nobody")
    with Client(d.intake) as victim:
        futs = [victim.submit(SLEEP, 0.05) for _ in range(40)]
        prefix = victim._prefix  # what every published task id of the victim starts with
        r = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(HIJACKER), str(nobody.pw_uid),
             str(nobody.pw_gid), endpoint, prefix],
            capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert [f.result(30) for f in futs] == [0.05] * 40
        assert victim.submit(ECHO, "still mine").result(10) == "still mine"
