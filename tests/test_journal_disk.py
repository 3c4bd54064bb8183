"""The journal on a real small filesystem: a tmpfs mounted for the test,
full (ENOSPC from the kernel, not a cap of ours) or read-only (EROFS, which
holds for root too, unlike a directory's mode bits). Where the test cannot
mount one (not root, no CAP_SYS_ADMIN), it skips and says why."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import StartDaemon, fill_journal_then_recover


def _mount(size: str, read_only: bool = False) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="px-disk-"))
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): "
                    "a full or read-only filesystem is not shown")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True, timeout=30)
        where.rmdir()


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 32 MiB tmpfs; requested before start_daemon, so unmounted after it stops."""
    yield from _mount("32m")


@pytest.fixture
def read_only_disk() -> Iterator[Path]:
    yield from _mount("1m", read_only=True)


def test_a_full_disk_refuses_new_work_by_name_and_loses_nothing(
    small_disk: Path, start_daemon: StartDaemon
) -> None:
    """The journal's filesystem fills (queued work with large arguments):
    new tasks are refused with JournalFull, never accepted unrecorded; every
    accepted task completes with its value; once the queue has drained and
    the journal has given space back, work is accepted again.

    min_free_bytes is sized as docs/CONFIGURATION.md says: room for the
    accepted work's bytes twice (the WAL and the checkpoint's copy) and for
    its results, twice too (here as large as the arguments): with less, a
    disk that fills anyway holds replies until space is freed."""
    d = start_daemon(journal={"path": str(small_disk / "journal.db"),
                              "min_free_bytes": 24 << 20, "retention_seconds": 0.0})
    accepted = fill_journal_then_recover(d.raw(), attempts=8000,  # 4x the disk
                                         results_timeout=60, recover_timeout=30)
    assert accepted, "nothing was accepted before the disk filled"


def test_a_journal_on_a_read_only_filesystem_stops_start_up_with_exit_4(
    read_only_disk: Path, start_daemon: StartDaemon
) -> None:
    """Read-only for root too: exit 4 and one line naming the directory."""
    d = start_daemon(wait=False, journal={"path": str(read_only_disk / "journal.db")})
    d.expected_exit = None
    assert d.wait_exit(20) == 4
    lines = d.log.strip().splitlines()
    assert len(lines) == 1 and "not writable" in lines[0] and str(read_only_disk) in lines[0], lines
