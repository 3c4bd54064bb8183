"""The journal on its own: real SQLite files in a temporary directory,
driven the way the daemon's loop drives it (accept, hand off, finish,
commit once per turn), then reopened as a restarted daemon would."""

from __future__ import annotations

import sqlite3
from collections import deque
from pathlib import Path

import msgspec
import pytest

from supervisor.config import JournalSection
from supervisor.core.tasks import Task, TaskTable, digest
from supervisor.daemon.journal import Journal
from supervisor.daemon.journal_handoff import HandoffFile, worker_note
from supervisor.daemon.journal_index import BYTES_PER_ID, BYTES_PER_ROW, RetainedIndex
from supervisor.errors import IdConflict, JournalError, JournalFull
from supervisor.protocol import NO_KWARGS, Result, encoder

NAME = "workers.builtin:echo"


def make_task(table: TaskTable, tid: str, arg: object = 1) -> Task:
    args = msgspec.Raw(encoder.encode([arg]))
    task = Task(table.next_key(), tid, NAME, args, msgspec.Raw(NO_KWARGS), None, 3, 0.0)
    task.digest = digest(NAME, args, NO_KWARGS)  # as intake sets it
    return task


def spec(tid: str, arg: object = 1) -> tuple[str, int]:
    """A submission's id and digest, as intake passes them to lookup()."""
    return tid, digest(NAME, encoder.encode([arg]), NO_KWARGS)


def ok(task: Task, value: object) -> Result:
    return Result(task.id, task.name, True, 1, value=msgspec.Raw(encoder.encode(value)))


class Daemonish:
    """A task table, slots' holdings and a journal, as the daemon has them."""

    def __init__(self, path: Path, **cfg: object) -> None:
        self.table = TaskTable()
        self.held: dict[int, deque[Task]] = {0: deque(), 1: deque()}
        self.gen = {0: 1, 1: 1}
        self.journal = Journal.open(path, JournalSection(**cfg))  # type: ignore[arg-type]
        self.journal.bind(self.table, lambda: [
            (s, self.gen[s], list(h)) for s, h in self.held.items()],
            lambda: tuple((s, self.gen[s]) for s in self.held))
        self.replayed, self.failed = self.journal.replay(self.table.next_key, 0.0)
        for task in self.replayed:
            self.table.add(task)
        # Each slot's worker notes what it starts, as a real one does.
        self.note = {s: worker_note(*ledger) for s in self.held
                     if (ledger := self.journal.ledger_for(s)) is not None}

    def submit(self, tid: str, arg: object = 1) -> Task:
        task = make_task(self.table, tid, arg)
        self.table.add(task)
        self.journal.accept(task)
        return task

    def hand_off(self, slot: int, n: int) -> list[Task]:
        tasks = [self.table.queue.popleft() for _ in range(n)]
        self.held[slot].extend(tasks)
        if not self.journal.started(slot, self.gen[slot], tasks):
            self.journal.commit()  # as dispatch does for a retry: recorded first
        return tasks

    def run(self, slot: int) -> Task:
        """The slot's worker starts the oldest task it holds."""
        task = self.held[slot][0]
        note = self.note[slot]
        assert note is not None
        note(task.key, task.digest)
        return task

    def die(self) -> None:
        """SIGKILL: no close(), no final commit."""
        self.journal.db.close()
        self.journal._handoff.close()

    def finish(self, slot: int, value: object = "v") -> Task:
        task = self.held[slot].popleft()
        result = ok(task, value)
        self.journal.finish(task, result)
        self.table.finish(task, True, result)
        return task


def test_unfinished_tasks_come_back_and_results_stay_by_id(tmp_path: Path) -> None:
    """Accepted-and-unfinished tasks are replayed with their arguments; a
    finished one is not, and its result is found by id after reopening."""
    path = tmp_path / "j.db"
    d = Daemonish(path)
    d.submit("a", 10)
    d.submit("b", 20)
    d.submit("c", 30)
    assert d.journal.commit()
    d.hand_off(0, 1)
    assert d.journal.commit()
    d.finish(0, "done-a")
    assert d.journal.commit()
    d.journal.db.close()  # the daemon dies: no close(), no final commit

    d2 = Daemonish(path)
    assert sorted(t.id for t in d2.replayed) == ["b", "c"]
    assert [msgspec.msgpack.decode(t.args) for t in d2.replayed] == [[20], [30]]
    assert [t.attempts for t in d2.replayed] == [0, 0]
    got = d2.journal.result("a")
    assert got is not None and msgspec.msgpack.decode(got.value) == "done-a"
    assert isinstance(d2.journal.lookup(*spec("a", 10)), Result)
    assert d2.journal.lookup(*spec("b", 20)) is None  # pending: intake attaches to it
    d2.journal.close()


def test_only_the_task_a_live_worker_was_running_is_charged(tmp_path: Path) -> None:
    """Of the tasks handed to a slot's live worker, the oldest unfinished is
    the one it was running: only that one is charged an attempt. Tasks of a
    slot whose worker had already died (and were requeued) are not."""
    path = tmp_path / "j.db"
    d = Daemonish(path)
    for tid in "abcdef":
        d.submit(tid)
    d.hand_off(0, 3)  # a b c on slot 0
    d.hand_off(1, 2)  # d e on slot 1
    assert d.journal.commit()
    d.finish(0)  # a done: b is now running on slot 0
    d.gen[1] = 0  # slot 1's worker died; d, e went back to the queue
    assert d.journal.commit()
    d.journal.db.close()

    d2 = Daemonish(path)
    attempts = {t.id: t.attempts for t in d2.replayed}
    assert attempts == {"b": 1, "c": 0, "d": 0, "e": 0, "f": 0}
    d2.journal.close()


def test_a_task_charged_to_its_limit_on_replay_fails_with_a_kept_result(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    for round_ in range(3):
        d = Daemonish(path)
        if round_ == 0:
            d.submit("killer")
        assert [t.id for t in d.replayed] == ([] if round_ == 0 else ["killer"])
        d.hand_off(0, 1)
        assert d.journal.commit()
        d.journal.db.close()
    d = Daemonish(path)
    assert d.replayed == []
    (failed,) = d.failed
    error = msgspec.msgpack.decode(failed.error)
    assert (failed.attempts, error["type"]) == (3, "WorkerCrashed")
    assert "quarantined" in error["message"]
    assert d.journal.result("killer") == failed
    d.journal.close()


def test_a_task_that_kills_the_daemon_before_its_acceptance_is_recorded_is_still_quarantined(
        tmp_path: Path) -> None:
    """A task goes to its worker before the turn's commit records it. If it
    kills the daemon then, the journal has no record of it, but its worker
    noted it in the hand-off file: the restart keeps a charge against its
    digest. The client (never acked) submits it again: it starts with that
    charge (a retry, so recorded before its worker gets it), the charge is
    used up by that record, and later deaths are charged from the log;
    out of attempts it fails, quarantined, its result kept by id."""
    path = tmp_path / "j.db"

    def resubmitted(d: Daemonish, max_attempts: int = 3) -> Task:
        task = make_task(d.table, "killer", 7)  # the client sends it again
        task.max_attempts = max_attempts
        return task

    d = Daemonish(path)
    task = resubmitted(d)
    d.table.add(task)
    d.journal.accept(task)
    d.hand_off(0, 1)  # goes before commit()
    d.run(0)  # and kills the daemon
    d.die()

    d = Daemonish(path)
    assert d.replayed == []  # never recorded: nothing to queue again
    task = resubmitted(d)
    assert d.journal.precharge(task) is None
    assert (task.attempts, task.crashes) == (1, 1)
    d.table.add(task)
    d.journal.accept(task)
    d.hand_off(0, 1)  # charged: recorded first
    d.run(0)
    d.die()

    d = Daemonish(path)
    assert d.journal.charges == {}  # used by the recorded acceptance
    assert [(t.id, t.attempts) for t in d.replayed] == [("killer", 2)]
    d.hand_off(0, 1)
    d.run(0)
    d.die()

    d = Daemonish(path)
    (failed,) = d.failed
    assert failed.attempts == 3 and d.journal.result("killer") == failed
    d.journal.close()

    # With max_attempts 1, one unrecorded death is enough: the resubmission
    # is answered at once, WorkerCrashed, and kept by id.
    path = tmp_path / "j2.db"
    d = Daemonish(path)
    task = resubmitted(d, 1)
    d.table.add(task)
    d.journal.accept(task)
    d.hand_off(0, 1)
    d.run(0)
    d.die()
    d = Daemonish(path)
    failed = d.journal.precharge(resubmitted(d, 1))
    assert failed is not None and failed.attempts == 1
    assert d.journal.precharge(resubmitted(d, 1)) is None  # used up
    assert d.journal.commit()
    got = d.journal.result("killer")
    assert got == failed
    error = msgspec.msgpack.decode(got.error)
    assert error["type"] == "WorkerCrashed" and "quarantined" in error["message"]
    d.journal.close()


def test_what_a_worker_noted_decides_what_is_charged(tmp_path: Path) -> None:
    """The note of what a slot's worker last started overrules the log's
    guess (the oldest unfinished task handed to that worker):
    - slot 0 got [a, b] and ran both; a's result was read and not committed
      (the daemon died in that turn): b is charged, not a.
    - slot 1 got [c, d], c finished and was recorded, d was not started:
      nothing is charged.
    - a task recorded, finished and compacted away leaves no charge.
    - a task started on a worker that then died (its death charged) is not
      charged again by its note."""
    path = tmp_path / "j.db"
    d = Daemonish(path)
    e = d.submit("e", 5)
    d.hand_off(0, 1)
    d.run(0)
    assert d.journal.commit()
    d.finish(0)
    assert d.journal.commit()
    d.journal._compact_due = True
    assert d.journal.commit()  # e is gone from the log
    for tid in "abcd":
        d.submit(tid)
    d.hand_off(0, 2)
    d.hand_off(1, 2)
    assert d.journal.commit()
    d.run(1)
    d.finish(1)  # c
    assert d.journal.commit()
    d.run(0)
    d.finish(0)  # a: read, then the daemon dies before committing it
    d.run(0)  # b starts
    d.die()
    d = Daemonish(path)
    attempts = {t.id: t.attempts for t in d.replayed}
    assert attempts == {"a": 0, "b": 1, "d": 0}
    assert d.journal.charges == {}
    again = make_task(d.table, "e2", 5)
    assert d.journal.precharge(again) is None and again.digest == e.digest
    d.journal.close()

    path = tmp_path / "j2.db"
    d = Daemonish(path)
    d.submit("x")
    d.hand_off(0, 1)
    d.run(0)
    assert d.journal.commit()
    d.journal.worker_gone(0)  # its worker died running x: charged as a crash
    d.die()
    d = Daemonish(path)
    # Not charged by the note (gone); the log's guess, x on slot 0's worker
    # as it last knew it, charges it once: the crash's charge, not committed.
    assert [(t.id, t.attempts) for t in d.replayed] == [("x", 1)]
    d.journal.close()


def test_stopped_workers_clean_stops_and_replayed_tasks_leave_no_stale_note(
        tmp_path: Path) -> None:
    """A note says what a worker is running only while it lives: a worker
    stopped by the operator (its task given back), a clean stop (every
    worker reaped), and a task replayed, finished and compacted away leave
    nothing to charge after the next crash."""
    path = tmp_path / "j.db"
    d = Daemonish(path)
    d.submit("x", 1)
    d.hand_off(0, 1)
    d.run(0)
    assert d.journal.commit()
    d.journal.worker_gone(0)  # phalanxctl stop 0: x goes back to the queue
    d.table.queue.append(d.held[0].popleft())
    d.gen[0] = 0
    d.journal.prune()  # the upkeep's second: the worker change is written
    assert d.journal.commit()
    d.die()
    d = Daemonish(path)
    assert [(t.id, t.attempts) for t in d.replayed] == [("x", 0)]
    d.hand_off(0, 1)
    d.run(0)
    assert d.journal.commit()
    d.gen = {0: 0, 1: 0}  # a clean stop: x given back (ShuttingDown), workers reaped
    d.journal.close()
    d = Daemonish(path)
    assert [(t.id, t.attempts) for t in d.replayed] == [("x", 0)]
    d.hand_off(0, 1)  # replayed, then finished: the log forgets it at compaction
    d.run(0)
    assert d.journal.commit()
    d.finish(0)
    assert d.journal.commit()
    d.journal._compact_due = True
    assert d.journal.commit()
    d.die()
    d = Daemonish(path)
    assert d.replayed == [] and d.journal.charges == {}
    d.journal.close()


def test_a_worker_crash_charge_is_recorded_in_its_turn(tmp_path: Path) -> None:
    """A worker dies running x; x will run again with one attempt charged.
    The charge is committed with that turn, not only at x's next hand-off:
    a daemon that dies before x is handed out again still knows it."""
    path = tmp_path / "j.db"
    d = Daemonish(path)
    x = d.submit("x")
    d.hand_off(0, 1)
    d.run(0)
    assert d.journal.commit()
    d.journal.worker_gone(0)  # its worker dies running x (recovery.py)
    d.held[0].clear()
    x.attempts = x.crashes = 1  # charge_death and retry
    d.table.queue.append(x)
    d.journal.charged(x)
    d.gen[0] = 2  # a new worker, not given x yet
    d.journal.prune()  # the worker change is written too
    assert d.journal.commit()
    d.die()
    d = Daemonish(path)
    assert [(t.id, t.attempts, t.crashes) for t in d.replayed] == [("x", 1, 1)]
    d.journal.close()


def test_a_torn_hand_off_record_is_ignored(tmp_path: Path) -> None:
    """A worker can die in the middle of writing a record: a record whose
    fields do not check is not read as a charge."""
    path = tmp_path / "h"
    f = HandoffFile(path, slots=2)

    def note(slot: int, key: int, digest: int) -> None:  # as that slot's worker does
        write = worker_note(str(path), slot, 5)
        assert write is not None
        write(key, digest)

    note(0, 11, 1234)
    note(1, 12, 5678)
    assert f.read(5) == [(0, 11, 1234), (1, 12, 5678)]
    assert f.read(4) == []
    f.reserve(70)  # a slot past the file's end grows it
    note(70, 13, 9)
    assert f.read(5)[-1] == (70, 13, 9)
    note(2, 14, 1)
    f.forget(2)  # its worker died
    assert [slot for slot, *_ in f.read(5)] == [0, 1, 70]
    f.close()
    raw = bytearray((tmp_path / "h").read_bytes())
    raw[8] ^= 1  # slot 0's key, half rewritten
    (tmp_path / "h").write_bytes(bytes(raw))
    f = HandoffFile(tmp_path / "h")
    assert [slot for slot, *_ in f.read(5)] == [1, 70]
    f.close()


def test_the_same_id_with_other_arguments_is_refused(tmp_path: Path) -> None:
    """One digest per id: a retained result's record keeps it (lookup refuses
    other arguments), and a replayed pending task carries it, so the task
    table checks a resubmission after a restart as it did before."""
    path = tmp_path / "j.db"
    d = Daemonish(path)
    d.submit("x", 1)
    d.submit("y", 1)
    assert d.journal.commit()
    d.hand_off(0, 1)
    d.finish(0)
    assert d.journal.commit()
    assert isinstance(d.journal.lookup(*spec("x", 2)), IdConflict)
    assert isinstance(d.journal.lookup(*spec("x", 1)), Result)
    d.journal.db.close()
    d2 = Daemonish(path)
    assert isinstance(d2.journal.lookup(*spec("x", 2)), IdConflict)
    (y,) = d2.replayed
    assert y.digest == spec("y", 1)[1] != spec("y", 2)[1]
    assert d2.journal.lookup(*spec("y", 2)) is None  # pending: the task table's to check
    d2.journal.close()


def test_retention_bytes_bound_the_id_index_too(tmp_path: Path) -> None:
    """The id index's memory (BYTES_PER_ID an id, BYTES_PER_ROW a row) is
    counted against retention_bytes with the results' bytes: 1,000 tiny
    results within room for fewer than 100 keep fewer than 100, the newest."""
    limit = 100 * (BYTES_PER_ID + BYTES_PER_ROW)
    d = Daemonish(tmp_path / "j.db", retention_bytes=limit)
    for i in range(1000):
        d.submit(f"t{i}")
        d.hand_off(0, 1)
        d.finish(0)
        assert d.journal.commit()
    d.journal.prune()
    stats = d.journal.stats()
    assert 20 <= stats["retained"] < 100
    assert stats["retained_bytes"] <= limit
    assert d.journal.result("t999") is not None and d.journal.result("t0") is None
    d.journal.close()


def test_the_index_forgets_rows_oldest_first_and_keeps_newer_rows_of_an_id() -> None:
    """Expiry by time and by bytes, oldest row first; an id finished again
    in a newer row (resubmitted after its first result expired) stays; the
    arrays' dead front is dropped as rows expire, lookups unchanged."""
    index = RetainedIndex()
    for row in range(1, 3001):
        index.add(row, float(row), 10, [f"a{row}", f"b{row}"])
    index.add(3001, 3001.0, 10, ["a1"])  # a1 again, in a newer row
    assert index.find("a1") == 3001 and index.find("b2") == 2
    assert index.expire(cutoff=2001.0, max_bytes=1 << 40) == 2000
    assert len(index) == 1001 and index.find("b2") is None and index.find("b2001") == 2001
    assert index.find("a1") == 3001  # expiring row 1 left the newer row's a1 alone
    per_row = 10 + BYTES_PER_ROW + 2 * BYTES_PER_ID
    assert index.expire(cutoff=0.0, max_bytes=per_row * 10) == 2991  # row 3001 is smaller
    assert list(index.newest_rows())[:2] == [3001, 3000] and len(index) == 10
    assert index.bytes <= per_row * 10


V1_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value);
CREATE TABLE accepted(n INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE started(n INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE finished(n INTEGER PRIMARY KEY, at REAL NOT NULL, bytes INTEGER NOT NULL,
                      body BLOB NOT NULL);
CREATE TABLE worker(slot INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, gen INTEGER NOT NULL);
INSERT INTO meta VALUES('schema', 1);
INSERT INTO meta VALUES('epoch', 1);
"""


def test_a_schema_1_journal_is_migrated_without_losing_work(tmp_path: Path) -> None:
    """A journal written by the previous schema (a table per record kind,
    CRC-32 digests): its pending tasks are replayed (the one its live worker
    was running charged), its results kept; a kept result's old digest is
    not checked (its arguments are gone), a pending task's is computed again."""
    path = tmp_path / "j.db"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    args = encoder.encode([7])
    record = [1, "p", NAME, msgspec.Raw(args), msgspec.Raw(NO_KWARGS), 3, 0.0, 0.0, False,
              False, 0, 0, 12345, 1.0]
    db.execute("INSERT INTO accepted(epoch, body) VALUES(1, ?)", (encoder.encode([record]),))
    db.execute("INSERT INTO started(epoch, body) VALUES(1, ?)",
               (encoder.encode([(0, 4, [1], [])]),))
    db.execute("INSERT INTO worker VALUES(0, 1, 4)")
    done = Result("f", NAME, True, 1, value=msgspec.Raw(encoder.encode("old")))
    body = encoder.encode([(999, 1.0, done)])
    db.execute("INSERT INTO finished(at, bytes, body) VALUES(?, ?, ?)", (9e9, len(body), body))
    db.commit()
    db.close()

    d = Daemonish(path)
    (p,) = d.replayed
    assert (p.id, msgspec.msgpack.decode(p.args), p.attempts) == ("p", [7], 1)
    assert p.digest == spec("p", 7)[1]  # computed again: a pending id is checked
    got = d.journal.lookup(*spec("f", "any arguments"))  # digest 0: not checked
    assert isinstance(got, Result) and msgspec.msgpack.decode(got.value) == "old"
    d.journal.close()
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert tables == {"meta", "log", "finished", "charges"}


def test_size_stays_bounded_under_steady_load(tmp_path: Path) -> None:
    """100,000 tasks through, results retained within 256 KiB: the file
    (database plus WAL) stops growing; old results are gone, recent kept."""
    path = tmp_path / "j.db"
    d = Daemonish(path, retention_bytes=256 * 1024)
    sizes = []
    for turn in range(1000):
        for i in range(100):
            d.submit(f"t{turn}-{i}", "x" * 50)
        assert d.journal.commit()
        d.hand_off(0, 100)
        assert d.journal.commit()
        for _ in range(100):
            d.finish(0)
        assert d.journal.commit()
        if turn % 100 == 99:
            d.journal.prune()
            sizes.append(path.stat().st_size + Path(f"{path}-wal").stat().st_size)
    assert max(sizes[5:]) <= max(sizes[:5]) * 1.5, sizes
    assert max(sizes) < 64 * 1024 * 1024
    assert d.journal.result("t0-0") is None
    assert d.journal.result("t999-99") is not None
    d.journal.close()


def test_a_full_journal_refuses_new_work_and_loses_nothing_it_accepted(tmp_path: Path) -> None:
    """max_bytes (SQLite's max_page_count, a real SQLITE_FULL): a commit that
    does not fit fails and is kept, new work is refused with JournalFull; once
    there is room the kept records are written."""
    path = tmp_path / "j.db"
    d = Daemonish(path, max_bytes=128 * 1024, retention_seconds=0.0)
    tasks = []
    for i in range(40):
        tasks.append(d.submit(f"big{i}", "x" * 8000))
        if not d.journal.commit():
            break
    assert d.journal.full and d.journal.failing
    assert isinstance(d.journal.lookup(*spec("new")), JournalFull)
    assert d.journal.lookup(tasks[0].id, tasks[0].digest) is None  # pending: attach, not refuse
    # Work finishes (the queue drains), the log is compacted, room comes back.
    d.hand_off(0, len(d.table.queue))
    while d.held[0]:
        d.finish(0)
    d.journal._retry_at = 0.0
    d.journal.prune()
    d.journal._retry_at = 0.0
    assert d.journal.commit()
    assert not d.journal.failing
    d.journal.prune()
    assert not d.journal.full
    assert d.journal.lookup(*spec("new")) is None
    d.journal.db.close()
    d2 = Daemonish(path)
    assert d2.replayed == []
    d2.journal.close()


def test_corrupt_locked_and_unwritable_files_give_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(JournalError, match=r"corrupt|unusable") as exc:
        Journal.open(bad, JournalSection())
    assert "mv " in str(exc.value) and "\n" not in str(exc.value)

    path = tmp_path / "j.db"
    first = Journal.open(path, JournalSection())
    with pytest.raises(JournalError, match="in use by another phalanxd"):
        Journal.open(path, JournalSection())
    first.close()

    nested = tmp_path / "a" / "b" / "j.db"
    Journal.open(nested, JournalSection()).close()  # missing directories are made
    assert nested.exists()


def test_sqlite_full_is_real(tmp_path: Path) -> None:
    """The cap the full-journal test relies on is SQLite's own SQLITE_FULL."""
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("PRAGMA max_page_count=8")
    db.execute("CREATE TABLE t(b BLOB)")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        db.execute("INSERT INTO t VALUES(?)", (b"x" * 100_000,))
    db.close()
