"""Durability: what phalanxd accepted survives phalanxd itself dying.

Real daemons, SIGKILLed with their whole process tree and started again on
the same endpoints and journal file."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from supervisor.client import Client, Subscriber
from tests.conftest import Daemon, StartDaemon, fill_journal_then_recover, wait_until

ECHO = "workers.builtin:echo"
SLEEP = "workers.builtin:sleep"
TASKS = 20_000
KILLS = 5


def test_five_daemon_kills_during_a_stream_lose_nothing_and_answer_each_id_once(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """SIGKILL phalanxd and everything it started 5 times while a client
    streams 20,000 tasks, starting a new phalanxd each time. The client only
    waits (re-attaching by id on each new boot): every future completes with
    its own value. No id is ever published twice (a result is committed, then
    published, and never computed again). A client that was not connected
    during the kills fetches results by id afterwards."""
    daemons: list[Daemon] = [start_daemon(workers={"count": 2})]
    client = Client(daemons[0].intake)
    published: dict[str, int] = {}
    sub = Subscriber(daemons[0].publisher, topics=["result."])
    expected: dict[str, Any] = {}
    futures: list[tuple[Any, Any]] = []
    try:
        per_wave = TASKS // KILLS
        for wave in range(KILLS):
            for i in range(per_wave):
                n = wave * per_wave + i
                if i % 1000 == 0:  # some tasks are running when the kill comes
                    futures.append((client.submit(SLEEP, 0.2), 0.2))
                futures.append((client.submit(ECHO, n), n))
            # Kill mid-stream: once part of this wave has been answered.
            wave_futures = futures[-per_wave:]
            wait_until(lambda wf=wave_futures: sum(f.done() for f, _ in wf) >= 50, 30,
                       message="the daemon answered nothing of this wave")
            _take(sub, published)
            daemons[-1].kill_everything()
            nxt = daemons[-1].restarted(tmp_path / f"boot{wave + 1}")
            daemons.append(nxt)
            nxt.launch().wait_ready()
        values = [f.result(timeout=60) for f, _ in futures]
        assert values == [v for _, v in futures]
        assert client.resubmitted > 0
        _take(sub, published, settle=0.5)
        twice = {k: v for k, v in published.items() if v > 1}
        assert not twice, f"published more than once: {list(twice.items())[:5]}"
        # The tap misses much: what a new daemon runs before the SUB has
        # reconnected (the replayed tasks, at once); but not everything.
        assert published

        ids = [f.task_id for f, _ in futures if f.task_id is not None]
        assert len(ids) == len(futures)
        for f, value in futures:
            expected[f.task_id] = value
        later = Client(daemons[-1].intake)
        try:
            sample = random.Random(11).sample(ids, 1000)
            assert [later.result(i, timeout=10) for i in sample] == [expected[i] for i in sample]
        finally:
            later.close()
            later.join(10)
    finally:
        client.terminate()
        sub.close()
        for d in daemons[1:]:
            d.teardown()


def _take(sub: Subscriber, published: dict[str, int], settle: float = 0.0) -> None:
    """Count every published result id that has arrived (waiting ``settle`` s
    for stragglers after the last one)."""
    while True:
        msg = sub.recv(timeout=settle)
        if msg is None:
            return
        for res in msg.body.get("results", []):
            published[res["id"]] = published.get(res["id"], 0) + 1


KILLER = '''
import os, signal
import psutil

def kill_daemon():
    """SIGKILL the phalanxd this worker belongs to (an ancestor process)."""
    proc = psutil.Process().parent()
    while proc is not None and "phalanxd" not in " ".join(proc.cmdline()):
        proc = proc.parent()
    os.kill(proc.pid, signal.SIGKILL)
    return "unreachable"

def kill_daemon_now():
    """SIGKILL phalanxd at once: it leads the session its workers are in."""
    os.kill(os.getsid(0), signal.SIGKILL)
    return "unreachable"
'''


@pytest.mark.parametrize("killer", ["kill_daemon", "kill_daemon_now"])
def test_a_task_that_kills_the_daemon_is_quarantined_across_restarts(
    start_daemon: StartDaemon, ipc_dir: Path, tmp_path: Path, monkeypatch: Any, killer: str
) -> None:
    """A task that SIGKILLs phalanxd itself is charged an attempt for each
    death, and after max_attempts it fails WorkerCrashed, quarantined,
    instead of killing every new daemon; its result is kept by id and the
    next daemon serves other work.

    A worker starts its task before the turn's commit records it, so the
    task may kill the daemon before the journal holds it or after (a race;
    ``test_journal.py`` drives both sides of it deterministically).
    Recorded, the restart charges and runs it again; not recorded, the
    hand-off file charges its digest and the client sends it again, as a
    client that was never acked does."""
    (ipc_dir / "pxkiller.py").write_text(KILLER)
    monkeypatch.setenv("PYTHONPATH", str(ipc_dir))
    daemons = [start_daemon(tasks={"allow": ["workers.builtin", "pxkiller"], "max_attempts": 3})]
    daemons[0].expected_exit = None
    spec = {"task": f"pxkiller:{killer}", "id": "killer"}
    try:
        deaths = 0
        acked = False  # a client resubmits what was never acked, and only that
        while True:
            d = daemons[-1]
            peer = d.raw()
            if not acked:
                peer.send_msg({"op": "submit", "tasks": [spec]})
            answers: list[dict[str, Any]] = []

            def settled(d: Daemon = d, peer: Any = peer, answers: list[Any] = answers) -> bool:
                nonlocal acked
                if d.exited() or d.log_events("task_quarantined_on_replay"):
                    return True
                if peer.sock.poll(50):
                    msg = peer.recv()
                    acked = acked or spec["id"] in msg.get("accepted", [])
                    answers.extend(r for r in msg.get("results", []) if r["id"] == spec["id"])
                return bool(answers)

            wait_until(settled, 20, message=lambda d=d: f"neither died nor answered\n{d.log}")
            if not d.exited():
                break
            deaths += 1
            assert deaths <= 3, "the task kept killing the daemon past its attempts"
            d.kill_everything()
            nxt = d.restarted(tmp_path / f"boot{deaths}")
            nxt.expected_exit = None
            daemons.append(nxt)
            nxt.launch()
        if not answers:  # quarantined by the restart itself: the client fetches it
            daemons[-1].wait_ready()
            answers = daemons[-1].raw().request({"op": "fetch", "ids": ["killer"]})["results"]
        assert deaths == 3
        (result,) = answers
        assert result["ok"] is False and result["attempts"] == 3
        assert result["error"]["type"] == "WorkerCrashed"
        assert "quarantined" in result["error"]["message"]
        fetched = daemons[-1].raw().request({"op": "fetch", "ids": ["killer"]})
        assert fetched["results"] == [result]
        daemons[-1].expected_exit = 0
        with Client(daemons[-1].intake) as client:
            assert client.map(ECHO, range(10)) == list(range(10))
    finally:
        for d in daemons[1:]:
            d.teardown()


def test_journaled_results_answer_resubmission_by_id_without_running_again(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """After a restart, resubmitting a finished id returns the journaled
    result (same attempts, no new run); the same id with other arguments is
    refused with IdConflict; an unknown id fetched gives UnknownId."""
    d = start_daemon()
    peer = d.raw()
    peer.send_msg({"op": "submit", "tasks": [{"task": "workers.testing:pid", "id": "p1"}]})
    first = peer.results_for({"p1"})["p1"]
    d.kill_everything()
    again = d.restarted(tmp_path / "again")
    again.launch().wait_ready()
    try:
        peer2 = again.raw()
        peer2.send_msg({"op": "submit", "tasks": [{"task": "workers.testing:pid", "id": "p1"}]})
        assert peer2.results_for({"p1"})["p1"] == first  # the old worker's pid: not run again
        reply = peer2.request({"op": "submit", "ack": True, "tasks": [
            {"task": "workers.builtin:echo", "id": "p1", "args": [1]}]})
        assert reply["op"] == "ack" and reply["accepted"] == []
        assert reply["rejected"][0]["error"]["type"] == "IdConflict"
        unknown = peer2.request({"op": "fetch", "ids": ["nope"]})["results"][0]
        assert unknown["error"]["type"] == "UnknownId"
    finally:
        again.teardown()


def _decode(body: bytes) -> Any:
    return msgspec.msgpack.decode(body)


def test_phalanxctl_result_and_tasks_read_the_journal_after_a_restart(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """`phalanxctl result ID` prints a journaled result (exit 0, or 1 for a
    failed task) after the daemon that ran it was killed; `phalanxctl tasks
    --json` lists pending and recently finished tasks."""
    from tests.test_ctl import run

    d = start_daemon()
    peer = d.raw()
    peer.send_msg({"op": "submit", "tasks": [
        {"task": ECHO, "id": "good", "args": [{"a": [1, 2]}]},
        {"task": "workers.builtin:fail", "id": "bad", "args": ["nope"]}]})
    peer.results_for({"good", "bad"})
    d.kill_everything()
    again = d.restarted(tmp_path / "again")
    again.launch().wait_ready()
    try:
        peer2 = again.raw()
        peer2.send_msg({"op": "submit", "tasks": [{"task": SLEEP, "id": "slow", "args": [30]}]})
        ok = run(again, "result", "good")
        assert (ok.code, ok.out.strip()) == (0, '{"a": [1, 2]}'), ok
        bad = run(again, "result", "bad")
        assert bad.code == 1 and "nope" in bad.out, bad
        missing = run(again, "result", "missing")
        assert missing.code != 0 and "UnknownId" in missing.err, missing
        def one_pending() -> dict[str, Any] | None:
            listing = run(again, "tasks", "--json").json()
            return listing if listing["pending_count"] == 1 else None

        listing = wait_until(one_pending, 10)
        assert [t["id"] for t in listing["pending"]] == ["slow"]
        assert {r["id"] for r in listing["recent"]} >= {"good", "bad"}
        text = run(again, "tasks")
        assert text.code == 0 and "slow" in text.out and "good" in text.out, text
    finally:
        again.teardown()


def test_a_corrupt_journal_stops_start_up_with_one_line_and_exit_4(
    start_daemon: StartDaemon, ipc_dir: Path
) -> None:
    """A file that is not a SQLite database: phalanxd exits 4 with one line
    on stderr saying how to move it aside; after moving it, it starts."""
    path = ipc_dir / "journal.db"
    path.write_bytes(b"garbage, not SQLite " * 500)
    d = start_daemon(wait=False)
    d.expected_exit = None
    assert d.wait_exit(20) == 4
    lines = d.log.strip().splitlines()
    assert len(lines) == 1 and "corrupt" in lines[0] and f"mv {path}" in lines[0], lines
    path.rename(path.with_suffix(".bad"))
    again = d.restarted(ipc_dir / "again")
    again.launch().wait_ready()
    again.teardown()


def test_a_journal_whose_directory_cannot_be_made_stops_start_up_with_exit_4(
    start_daemon: StartDaemon, ipc_dir: Path
) -> None:
    """The journal's directory is in the way (a file): exit 4, one line."""
    (ipc_dir / "blocker").write_text("a file where a directory should be")
    d = start_daemon(wait=False, journal={"path": str(ipc_dir / "blocker" / "journal.db")})
    d.expected_exit = None
    assert d.wait_exit(20) == 4
    lines = d.log.strip().splitlines()
    assert len(lines) == 1 and "journal directory" in lines[0], lines


def test_a_journal_in_a_read_only_directory_stops_start_up_with_exit_4(
    start_daemon: StartDaemon, ipc_dir: Path
) -> None:
    import os

    import pytest

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories (test_journal_disk.py shows a "
                    "read-only filesystem, which holds for root too)")
    ro = ipc_dir / "ro"
    ro.mkdir(mode=0o500)
    try:
        d = start_daemon(wait=False, journal={"path": str(ro / "journal.db")})
        d.expected_exit = None
        assert d.wait_exit(20) == 4
        assert "not writable" in d.log, d.log
    finally:
        ro.chmod(0o700)


def test_a_missing_journal_directory_is_created(start_daemon: StartDaemon, ipc_dir: Path) -> None:
    path = ipc_dir / "state" / "deeper" / "journal.db"
    d = start_daemon(journal={"path": str(path)})
    with Client(d.intake) as client:
        assert client.submit(ECHO, 1).result(timeout=10) == 1
    assert path.exists()


def test_a_full_journal_refuses_new_work_by_name_and_recovers(start_daemon: StartDaemon) -> None:
    """journal.max_bytes (SQLite's max_page_count, so a real SQLITE_FULL, as
    on a full disk): while queued work fills the journal, new tasks are
    refused with JournalFull instead of being accepted unrecorded; every
    task that was accepted completes; once the queue drains it accepts again."""
    d = start_daemon(journal={"max_bytes": 512 * 1024, "retention_seconds": 0.0})
    fill_journal_then_recover(d.raw(), attempts=200, results_timeout=30, recover_timeout=15)




@pytest.mark.parametrize("result_cache", [100_000, 0])
def test_a_charge_left_by_an_unrecorded_killer_answers_every_resubmission_without_running(
    start_daemon: StartDaemon, ipc_dir: Path, result_cache: int
) -> None:
    """The journal of a daemon that died in the turn a task started, before
    that turn's commit: its worker's note names the task, the log does not.
    The new daemon keeps a charge against its name and arguments;
    with max_attempts 1 the client's resubmission is answered WorkerCrashed,
    quarantined, at once, and so is a second submission of the id sent
    right behind it (the same loop turn, most often): the task never runs,
    with the result cache on or off."""
    from tests.test_journal import Daemonish, make_task

    dead = Daemonish(ipc_dir / "journal.db")
    task = make_task(dead.table, "x", 41)
    dead.table.add(task)
    dead.journal.accept(task)
    dead.hand_off(0, 1)  # goes before the turn's commit
    dead.run(0)  # its worker notes it, and it kills the daemon: no commit
    dead.die()

    d = start_daemon(tasks={"result_cache": result_cache})
    (replayed,) = d.log_events("journal_replayed")
    assert replayed["charged_unrecorded"] == 1
    peer = d.raw()
    again = {"task": ECHO, "id": "x", "args": [41], "max_attempts": 1}
    peer.send_msg({"op": "submit", "tasks": [again]})
    peer.send_msg({"op": "submit", "tasks": [again]})
    answers: list[dict[str, Any]] = []
    for _ in range(4):  # an ack and a results message per submission
        answers.extend(r for r in peer.recv().get("results", []) if r["id"] == "x")
    assert len(answers) == 2, answers
    for result in answers:
        assert result["ok"] is False and result["error"]["type"] == "WorkerCrashed", result
        assert "quarantined" in result["error"]["message"]
    assert len(d.log_events("task_quarantined_on_submit")) == 1


def test_a_worker_that_cannot_note_what_it_starts_gets_hand_offs_recorded_first(
    start_daemon: StartDaemon, ipc_dir: Path
) -> None:
    """A worker that cannot map the hand-off file says so (on stderr and in
    its hello); the daemon logs it and records that slot's hand-offs before
    the worker gets them, and the work goes on."""
    import os
    import shutil
    import signal

    d = start_daemon()
    handoff = ipc_dir / "journal.db-handoff"
    handoff.unlink()  # the daemon keeps its own mapping; a new worker finds a directory
    handoff.mkdir()
    try:
        os.kill(d.slot_pids()[0], signal.SIGKILL)
        wait_until(lambda: d.log_events("journal_handoff_unavailable"), 20,
                   message=lambda: f"no journal_handoff_unavailable\n{d.log}")
        with Client(d.intake) as client:
            assert client.map(ECHO, range(50), chunksize=1) == list(range(50))
        (event,) = d.log_events("journal_handoff_unavailable")
        assert event["slot"] == 0
    finally:
        shutil.rmtree(handoff, ignore_errors=True)
