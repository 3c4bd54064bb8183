"""phalanxctl with several --endpoint: one command, every daemon."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import StartDaemon
from tests.test_ctl import ctl


def test_status_and_pause_across_two_daemons_and_one_missing(start_daemon: StartDaemon,
                                                   tmp_path: Path) -> None:
    a, b = start_daemon(), start_daemon(workers={"count": 1})
    ran = ctl("-s", a.control, "-s", b.control, "status")
    assert ran.code == 0, ran.err
    assert f"== {a.control} (exit 0)" in ran.out and f"== {b.control} (exit 0)" in ran.out
    assert ran.out.count("RUNNING") == 3

    as_json = ctl("-s", a.control, "-s", b.control, "--json", "status").json()
    assert [len(as_json[ep]["result"]) for ep in (a.control, b.control)] == [2, 1]

    gone = f"ipc://{tmp_path}/nobody"
    ran = ctl("-t", "1", "-s", a.control, "-s", gone, "status")
    assert ran.code == 4  # status's code for "cannot reach a daemon"
    assert f"== {a.control} (exit 0)" in ran.out and f"== {gone} (exit 4)" in ran.out
    assert "is phalanxd running?" in ran.err

    ran = ctl("-s", a.control, "-s", b.control, "pause")
    assert ran.code == 0, ran.err
    assert a.stats()["paused"] and b.stats()["paused"]
    # streaming and slot-level commands need one daemon
    ran = ctl("-s", a.control, "-s", b.control, "tail", "0")
    assert ran.code == 2 and "needs one daemon" in ran.err
