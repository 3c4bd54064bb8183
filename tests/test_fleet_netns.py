"""Daemons in network namespaces of their own, as on separate hosts: a real
non-loopback address (so CURVE is required), a link we can cut.

Each "host" is a network namespace joined to ours by a veth pair on a
private /30 (10.x.y.0/24, x and y random). Skipped, with the reason printed,
where namespaces cannot be made (not root, no ``ip``, no CAP_NET_ADMIN).
Every namespace, veth and route the test makes is removed on the way out.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor import curve
from supervisor.client import Client
from supervisor.curve import ClientKeys
from tests.conftest import Daemon, base_config, merge, phalanxd_command, short_tempdir, wait_until

PID = "workers.testing:pid"
SLEEP = "workers.builtin:sleep"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Host:
    """A network namespace with an address reachable from ours."""

    def __init__(self, tag: str, index: int, subnet: tuple[int, int]) -> None:
        self.ns = f"px{tag}{index}"
        self.outer = f"pxh{tag}{index}"  # our end of the veth pair (<= 15 chars)
        a, b = subnet
        self.address = f"10.{a}.{b}.{4 * index + 2}"
        ip("netns", "add", self.ns)
        try:
            ip("link", "add", self.outer, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
            ip("addr", "add", f"10.{a}.{b}.{4 * index + 1}/30", "dev", self.outer)
            ip("link", "set", self.outer, "up")
            for cmd in (["addr", "add", f"{self.address}/30", "dev", "eth0"],
                        ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
                ip("netns", "exec", self.ns, "ip", *cmd)
        except BaseException:
            self.remove()
            raise

    def link(self, up: bool) -> None:
        """Cut or restore the path to this host. A blackhole route, not
        `link down`: with the link down, packets would take the default
        route instead, and whatever answers there is not this host."""
        if up:
            subprocess.run(["ip", "route", "del", "blackhole", f"{self.address}/32"],
                           capture_output=True, timeout=10, check=False)
        else:
            ip("route", "add", "blackhole", f"{self.address}/32")

    def remove(self) -> None:
        self.link(True)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True, timeout=10,
                       check=False)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10,
                       check=False)


class NetnsDaemon(Daemon):
    def __init__(self, host: Host, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.host = host

    def launch(self) -> NetnsDaemon:
        with open(self.log_path, "wb") as log:
            # `ip netns exec` enters the namespace and execs: same pid.
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.host.ns, *phalanxd_command(),
                 "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no 'ip' command (iproute2)"
    probe = f"px{secrets.token_hex(3)}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                          timeout=10, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10, check=False)
    return None


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[list[NetnsDaemon], ClientKeys]]:
    why = _can_make_namespaces()
    if why:
        print(f"skipping the network-namespace test: {why}")
        pytest.skip(why)
    tag = secrets.token_hex(2)
    subnet = (100 + secrets.randbelow(150), secrets.randbelow(250))
    made: list[Host] = []
    daemons: list[NetnsDaemon] = []
    ipc_dir = short_tempdir()
    try:
        _, server_secret = curve.generate(tmp_path / "server", "server")
        client_public, client_secret = curve.generate(tmp_path / "client", "app")
        allowed = tmp_path / "allowed"
        allowed.mkdir()
        shutil.copy(client_public, allowed)
        for i in range(3):
            host = Host(tag, i, subnet)
            made.append(host)
            run_dir = ipc_dir / f"h{i}"
            run_dir.mkdir()
            log_dir = tmp_path / f"h{i}"
            log_dir.mkdir()
            config = merge(base_config(run_dir), {
                "endpoints": {"intake": f"tcp://{host.address}:7455",
                              "publisher": f"tcp://{host.address}:7456"},
                "curve": {"secret_key_file": str(server_secret),
                          "authorized_keys_dir": str(allowed)},
            })
            d = NetnsDaemon(host, run_dir, log_dir, config)
            daemons.append(d)
            d.launch()
        for d in daemons:
            d.wait_ready()
        yield daemons, ClientKeys.load(tmp_path / "server" / "server.key", client_secret)
    finally:
        for host in made:
            host.link(True)
        errors = []
        for d in daemons:
            try:
                d.teardown()
            except AssertionError as exc:
                errors.append(str(exc))
        for host in made:
            host.remove()
        shutil.rmtree(ipc_dir, ignore_errors=True)
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)


def view(c: Client, d: Daemon) -> dict[str, Any]:
    return next(v for v in c.daemons() if v["endpoint"] == d.intake)


def test_a_cut_off_host_loses_nothing_and_gets_work_again_when_it_returns(
        hosts: tuple[list[NetnsDaemon], ClientKeys]) -> None:
    """Across real (namespaced) links with CURVE: every host gets work;
    cutting one host's link moves its tasks to the others (each future
    completes with its own value); restoring it brings it back into use."""
    daemons, keys = hosts
    a = daemons[0]
    with Client([d.intake for d in daemons], curve=keys, dead_after=1.0) as c:
        values = [0.1 + i / 10_000 for i in range(60)]
        futs = [c.submit(SLEEP, v) for v in values]
        wait_until(lambda: any(s["current"] for s in a.status()), 15,
                   message=lambda: f"host a never ran a task: {c.daemons()}")
        a.host.link(False)
        assert [f.result(60) for f in futs] == values
        assert c.resubmitted > 0
        assert view(c, a)["deaths"] >= 1 and not view(c, a)["alive"], c.daemons()
        a.host.link(True)
        # Back: it answers a ping again, and once what it still ran for us
        # during the cut is done (a pong shows it), it has room and gets work.
        wait_until(lambda: c.ping() and view(c, a)["alive"] and view(c, a)["room"], 20,
                   interval=0.05, message=lambda: f"host never came back: {c.daemons()}")
        pids = [f.result(30) for f in [c.submit(PID) for _ in range(30)]]
    owners = {pid: d.intake for d in daemons for pid in d.slot_pids().values()}
    where = Counter(owners[p] for p in pids)
    assert where[a.intake] > 0, where
