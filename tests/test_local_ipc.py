"""A daemon on TCP also listens on ipc in its runtime dir, and a client on
the same host and user finds it there by default (no TCP stack per message)."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest

from supervisor.client import Client, Subscriber
from tests.conftest import StartDaemon, free_tcp_port


def test_client_without_endpoint_uses_the_local_ipc_intake(
    start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch,
) -> None:
    d = start_daemon(endpoints={"intake": f"tcp://127.0.0.1:{free_tcp_port()}",
                                "publisher": f"tcp://127.0.0.1:{free_tcp_port()}"})
    run = Path(d.config["daemon"]["runtime_dir"])
    for name in ("intake.sock", "publisher.sock"):
        mode = (run / name).stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)
    monkeypatch.setenv("PHALANX_RUNTIME_DIR", str(run))
    monkeypatch.delenv("PHALANX_ENDPOINT", raising=False)
    monkeypatch.delenv("PHALANX_PUBLISHER", raising=False)
    with Client() as client:
        assert client._endpoints == [f"ipc://{run / 'intake.sock'}"]
        assert client.map("workers.builtin:echo", range(10)) == list(range(10))
    sub = Subscriber(topics=("event.",), timeout=0.1)
    sub.close()
    # The TCP endpoint serves as before.
    with Client(d.intake) as tcp:
        assert tcp.apply("workers.builtin:echo", (7,)) == 7
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout=30) == 0
    assert not (run / "intake.sock").exists() and not (run / "publisher.sock").exists()
