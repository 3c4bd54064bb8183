"""CURVE beyond loopback: keys from phalanxctl keygen, only authorised
clients get in, and a daemon refuses a non-loopback bind without keys."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import zmq

from supervisor import curve
from supervisor.client import Client, Subscriber
from supervisor.curve import ClientKeys
from tests.conftest import (
    RawPeer,
    StartDaemon,
    free_tcp_port,
    phalanxd_command,
    to_toml,
    wait_until,
)

ECHO = "workers.builtin:echo"


def keygen(directory: Path, name: str) -> tuple[Path, Path]:
    ctl = Path(sys.executable).with_name("phalanxctl")
    done = subprocess.run([str(ctl), "keygen", str(directory), name], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "public key " in done.stdout
    return directory / f"{name}.key", directory / f"{name}.key_secret"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for name in ("server", "alice", "mallory"):
        out[name + ".key"], out[name + ".secret"] = curve.generate(tmp_path / name, name)
    allowed = tmp_path / "clients"
    allowed.mkdir()
    shutil.copy(out["alice.key"], allowed / "alice.key")
    out["clients"] = allowed
    return out


def test_keygen_writes_a_public_key_and_a_0600_secret(tmp_path: Path) -> None:
    public, secret = keygen(tmp_path / "k", "host1")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert "secret-key" not in public.read_text()
    keys = ClientKeys.load(public, secret)
    assert keys.server_public == keys.public and len(keys.secret) == 40
    # a second run never overwrites a key
    ctl = Path(sys.executable).with_name("phalanxctl")
    again = subprocess.run([str(ctl), "keygen", str(tmp_path / "k"), "host1"],
                           capture_output=True, text=True, timeout=30, check=False)
    assert again.returncode == 1 and "not overwriting" in again.stderr


def test_only_an_authorised_key_gets_work_done_and_results_published(
        start_daemon: StartDaemon, keys: dict[str, Path]) -> None:
    intake = f"tcp://127.0.0.2:{free_tcp_port()}"
    publisher = f"tcp://127.0.0.2:{free_tcp_port()}"
    d = start_daemon(
        endpoints={"intake": intake, "publisher": publisher},
        curve={"secret_key_file": str(keys["server.secret"]),
               "authorized_keys_dir": str(keys["clients"])},
    )
    alice = ClientKeys.load(keys["server.key"], keys["alice.secret"])
    mallory = ClientKeys.load(keys["server.key"], keys["mallory.secret"])
    sub = Subscriber(publisher, topics=["result."], curve={publisher: alice})
    intruder = Client(intake, curve=mallory, unreachable_after=60)
    plain = RawPeer(intake)
    try:
        stolen = intruder.submit(ECHO, "mallory")
        try:  # queued, or refused at once: a plain peer has no connection to queue on
            plain.sock.send(msgspec.msgpack.encode({"op": "ping"}), zmq.NOBLOCK)
        except zmq.Again:
            pass
        wait_until(lambda: d.log_events("curve_client_refused"), 10,
                   message=lambda: f"no refusal logged\n{d.log}")
        markers = 0
        with Client(intake, curve=alice) as c:
            assert c.map(ECHO, range(20)) == list(range(20))

            def published() -> bool:
                nonlocal markers
                markers += 1
                c.submit(ECHO, "marker").result(10)
                msg = sub.recv(0.1)
                return msg is not None
            wait_until(published, 10, message="an authorised subscriber got nothing")
        refused = d.log_events("curve_client_refused")
        assert {e["key"] for e in refused if "key" in e} == {mallory.public.decode()}
        # Nothing reached the intruder or the plain peer, and nothing of
        # theirs ran: the daemon counted exactly alice's tasks.
        assert not stolen.done()
        assert not plain.sock.poll(200)
        assert d.stats()["succeeded"] == 20 + markers
    finally:
        intruder.terminate()
        sub.close()
        plain.close()


def run_phalanxd(tmp_path: Path, sections: dict[str, dict[str, object]]
                 ) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "phalanx.toml"
    base: dict[str, dict[str, object]] = {
        "daemon": {"runtime_dir": str(tmp_path / "run")}, "workers": {"count": 1}}
    path.write_text(to_toml({**base, **sections}))
    return subprocess.run([*phalanxd_command(), "--config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "*"])
def test_a_non_loopback_bind_without_keys_refuses_to_start_with_one_line(
        tmp_path: Path, host: str) -> None:
    port = free_tcp_port()
    done = run_phalanxd(tmp_path, {"endpoints": {
        "intake": f"tcp://{host}:{port}", "publisher": f"ipc://{tmp_path}/pub"}})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"endpoints.intake: 'tcp://{host}:{port}' is reachable from other hosts" in lines[0]
    assert not (tmp_path / "run").exists()  # refused before touching anything


def test_a_secret_key_readable_by_others_refuses_to_start(tmp_path: Path,
                                                         keys: dict[str, Path]) -> None:
    keys["server.secret"].chmod(0o644)
    done = run_phalanxd(tmp_path, {
        "endpoints": {"intake": f"ipc://{tmp_path}/in", "publisher": f"ipc://{tmp_path}/pub"},
        "curve": {"secret_key_file": str(keys["server.secret"]),
                  "authorized_keys_dir": str(keys["clients"])}})
    assert done.returncode == 3
    assert "it must be 0600" in done.stderr
