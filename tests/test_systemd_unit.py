"""The shipped systemd unit: valid to systemd, and holding the settings the
operating contract relies on."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "phalanx.service"
SHIPPED_EXEC_START = "/usr/local/bin/phalanxd --config /etc/phalanx/phalanx.toml"

# The daemon's default drain grace (`[shutdown] grace`); TimeoutStopSec must
# exceed it or systemd SIGKILLs a drain in progress.
DEFAULT_DRAIN_GRACE_S = 30.0


def _load_service() -> configparser.SectionProxy:
    # interpolation=None: systemd's %t/%n specifiers are not configparser's.
    # strict=False: systemd allows repeated keys (Environment=, ...).
    # optionxform=str: systemd keys are case-sensitive.
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"), source=str(UNIT))
    return parser["Service"]


def _timespan_seconds(value: str) -> float:
    """Parse the systemd time spans this unit uses ("45s", "1min 30s", "500ms", "10")."""
    units = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip()):
        total += float(number) * units[unit or "s"]
    return total


def _existing_executable() -> str:
    true = shutil.which("true")
    return true if true is not None else sys.executable


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit with no warning about it.

    verify checks that ExecStart's binary exists and is executable, and
    /usr/local/bin/phalanxd is only there once installed, so a temporary copy
    points ExecStart at an executable that exists here (arguments kept).
    Everything else is verified as shipped.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on PATH; cannot verify the unit file")
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={SHIPPED_EXEC_START}\n" in text
    copy = tmp_path / UNIT.name
    copy.write_text(
        text.replace("ExecStart=/usr/local/bin/phalanxd ", f"ExecStart={_existing_executable()} "),
        encoding="utf-8",
    )
    result = subprocess.run(
        [analyze, "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # verify also loads units on this machine (multi-user.target, ...); only
    # complaints about ours count.
    about_ours = [line for line in output.splitlines() if UNIT.name in line or str(copy) in line]
    assert about_ours == [], output


def test_unit_holds_the_operating_contract() -> None:
    """The settings phalanxd's behaviour depends on are present with the
    expected values."""
    service = _load_service()
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"] == SHIPPED_EXEC_START
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert _timespan_seconds(service["WatchdogSec"]) == 10.0
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    assert _timespan_seconds(service["TimeoutStopSec"]) > DEFAULT_DRAIN_GRACE_S
    assert service["Restart"] == "on-failure"
    assert service["RuntimeDirectory"] == "phalanx"
    assert service["RuntimeDirectoryMode"] == "0700"
    assert service["Environment"] == "PHALANX_RUNTIME_DIR=%t/phalanx"
    assert service["DynamicUser"] == "yes"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["LimitNOFILE"] == "65536"


def test_memory_deny_write_execute_stays_off() -> None:
    """MemoryDenyWriteExecute is not set: extension modules and ctypes
    callbacks may need W+X pages, and tasks would crash mysteriously."""
    assert "MemoryDenyWriteExecute" not in _load_service()


def test_timespan_parser() -> None:
    """The helper reads the span forms systemd writes, so the contract test
    above compares real durations."""
    assert _timespan_seconds("45s") == 45.0
    assert _timespan_seconds("45") == 45.0
    assert _timespan_seconds("1min 30s") == 90.0
    assert _timespan_seconds("500ms") == 0.5
