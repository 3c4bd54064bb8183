"""Captured worker output: the in-memory ring behind `tail`, its log files
and their rotation, `clear`, and SIGUSR1 reopening files after logrotate."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from supervisor.daemon.output import RingLog
from tests.conftest import StartDaemon, wait_until

SAY = "workers.testing:say"


# ------------------------------------------------------------ pure ring
def test_ring_keeps_the_newest_bytes_at_growing_offsets() -> None:
    """Offsets only grow; the ring keeps the newest `capacity` bytes."""
    ring = RingLog(8)
    ring.write(b"abcdef")
    ring.write(b"ghij")
    assert (ring.start, ring.end) == (2, 10)
    assert ring.read(None, 100) == (b"cdefghij", 10, False)
    assert ring.read(None, 3) == (b"hij", 10, False)


def test_ring_read_from_an_offset_reports_what_was_lost() -> None:
    """A follower that fell behind learns it (overflow) and resumes at the
    oldest byte still held; one that is up to date gets nothing new."""
    ring = RingLog(4)
    ring.write(b"0123456789")
    assert ring.read(2, 100) == (b"6789", 10, True)
    assert ring.read(8, 100) == (b"89", 10, False)
    assert ring.read(10, 100) == (b"", 10, False)


def test_clear_forgets_bytes_but_keeps_offsets_growing() -> None:
    """After clear a follower's offset stays valid: nothing is re-sent."""
    ring = RingLog(16)
    ring.write(b"hello")
    ring.clear()
    assert ring.read(None, 100) == (b"", 5, False)
    ring.write(b"!")
    assert ring.read(5, 100) == (b"!", 6, False)


def test_file_rotation_keeps_the_configured_backups(tmp_path: Path) -> None:
    """At max_bytes the file becomes .1 (older ones shift up); only
    `backups` old files are kept."""
    path = tmp_path / "w.log"
    ring = RingLog(1024, path, max_bytes=10, backups=2)
    for chunk in (b"aaaaaaaaaa", b"bbbbbbbbbb", b"cccccccccc", b"dd"):
        ring.write(chunk)
    ring.close()
    assert path.read_bytes() == b"dd"
    assert (tmp_path / "w.log.1").read_bytes() == b"cccccccccc"
    assert (tmp_path / "w.log.2").read_bytes() == b"bbbbbbbbbb"
    assert not (tmp_path / "w.log.3").exists()


def test_reopen_writes_to_a_new_file_after_logrotate_moved_it(tmp_path: Path) -> None:
    """SIGUSR1's job: after the file was renamed away, writing continues in
    a fresh file at the configured path."""
    path = tmp_path / "w.log"
    ring = RingLog(1024, path)
    ring.write(b"before\n")
    path.rename(tmp_path / "w.log.old")
    ring.reopen()
    ring.write(b"after\n")
    ring.close()
    assert path.read_bytes() == b"after\n"
    assert (tmp_path / "w.log.old").read_bytes() == b"before\n"


# ------------------------------------------------------------ real daemon
def test_worker_output_lands_in_rotated_files_and_tail(start_daemon: StartDaemon,
                                                        tmp_path: Path) -> None:
    """With output.dir set, what tasks print goes to worker-N.stdout.log /
    .stderr.log (rotated at max_bytes) as well as to `tail`; `clear`
    empties the ring, not the files; SIGUSR1 reopens the files."""
    logs = tmp_path / "logs"
    d = start_daemon(workers={"count": 1},
                     output={"dir": str(logs), "max_bytes": 200, "backups": 2})
    client = d.client()
    for i in range(12):
        client.submit(SAY, f"line {i:02d} " + "x" * 20).result(10)
    client.submit(SAY, "to stderr", "stderr").result(10)
    out = logs / "worker-0.stdout.log"
    wait_until(lambda: "line 11" in out.read_text() if out.exists() else False, timeout=5)
    rotated = logs / "worker-0.stdout.log.1"
    assert rotated.exists(), sorted(p.name for p in logs.iterdir())
    assert not (logs / "worker-0.stdout.log.3").exists()
    wait_until(lambda: (logs / "worker-0.stderr.log").exists()
               and "to stderr" in (logs / "worker-0.stderr.log").read_text(), timeout=5)
    tail = d.call("tail", {"slot": 0, "stream": "stdout", "bytes": 10_000})
    assert "line 11" in tail["data"]

    assert d.call("clear", {"slots": [0]}) == [{"slot": 0, "cleared": True}]
    assert d.call("tail", {"slot": 0, "stream": "stdout"})["data"] == ""
    assert "line 11" in out.read_text() + rotated.read_text()

    out.rename(logs / "moved.log")  # what logrotate does
    os.kill(d.pid, signal.SIGUSR1)
    wait_until(lambda: d.log_events("log_files_reopened"), timeout=5)
    client.submit(SAY, "after reopen").result(10)
    wait_until(lambda: out.exists() and "after reopen" in out.read_text(), timeout=5)
