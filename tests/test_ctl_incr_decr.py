"""phalanxctl incr / decr grow and shrink the pool by one (or N), as circus does,
through the same resize path as `update`; no accepted task is lost."""

from __future__ import annotations

from tests.conftest import StartDaemon, wait_until
from tests.test_ctl import run


def test_incr_and_decr_resize_the_pool_without_losing_work(start_daemon: StartDaemon) -> None:
    d = start_daemon(workers={"count": 2})
    client = d.client()
    futures = [client.submit("workers.builtin:sleep", 0.01) for _ in range(200)]
    r = run(d, "incr")
    assert (r.code, r.out) == (0, "workers: 2 -> 3\n")
    wait_until(lambda: [s["state"] for s in d.status()] == ["RUNNING"] * 3, 15)
    assert run(d, "incr", "2", "--json").json() == {"workers": 5, "was": 3}
    wait_until(lambda: len(d.status()) == 5 and run(d, "status").code == 0, 15)
    assert run(d, "decr", "3").out == "workers: 5 -> 2\n"
    wait_until(lambda: len(d.status()) == 2, 20, message=lambda: run(d, "status").out)
    assert [f.result(timeout=30) for f in futures] == [0.01] * 200
    r = run(d, "decr", "2")
    assert r.code != 0 and "cannot shrink below one" in r.err
    assert run(d, "decr").out == "workers: 2 -> 1\n"
    wait_until(lambda: len(d.status()) == 1, 20)
    assert client.apply("workers.builtin:echo", [7]) == 7
