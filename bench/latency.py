"""Round-trip latency: one task at a time, submit to result in hand.

Each contender does a warm-up, then ``count`` sequential round trips of
``bench.tasks.noop(i)``; rounds are interleaved across contenders and all
samples of a contender are pooled for the percentiles. CPU time per round
trip is recorded for this process, phalanxd and the workers.

Two diagnostic rows break Phalanx's figure down: a bare DEALER speaking the
wire protocol (no client thread, no Future), and the floors any design of
this shape pays: a ZeroMQ ipc echo with no daemon logic, and a
multiprocessing Pipe echo (the supervisor-to-worker hop).
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import psutil
import zmq

from bench import tasks
from bench.harness import (
    NOOP,
    WORKERS,
    PhalanxUnderTest,
    cpu_seconds,
    mp_pool,
    say,
    self_cpu_seconds,
)
from bench.stats import scaled, summary
from supervisor.client import Client

WARMUP = 200
Timed = tuple[list[float], dict[str, float]]  # samples (s), CPU seconds by party


@contextmanager
def _cpu(daemon: psutil.Process | None, workers: list[psutil.Process]) -> Iterator[dict[str, float]]:
    used: dict[str, float] = {}
    c0, d0, w0 = self_cpu_seconds(), cpu_seconds([daemon] if daemon else []), cpu_seconds(workers)
    yield used
    used["client"] = self_cpu_seconds() - c0
    used["daemon"] = cpu_seconds([daemon] if daemon else []) - d0
    used["workers"] = cpu_seconds(workers) - w0


def _loop(count: int, once: Callable[[int], object]) -> list[float]:
    out = []
    clock = time.perf_counter
    for i in range(count):
        t0 = clock()
        once(i)
        out.append(clock() - t0)
    return out


def phalanx(d: PhalanxUnderTest, count: int) -> Timed:
    with Client(d.intake) as c:
        c.ping()

        def once(i: int) -> None:
            c.submit(NOOP, i).result()

        _loop(WARMUP, once)
        with _cpu(d.process(), d.worker_processes()) as cpu:
            out = _loop(count, once)
    return out, cpu


def phalanx_apply(d: PhalanxUnderTest, count: int) -> Timed:
    """Client.apply: the synchronous call, Pool.apply's counterpart."""
    with Client(d.intake) as c:
        c.ping()

        def once(i: int) -> None:
            c.apply(NOOP, (i,))

        _loop(WARMUP, once)
        with _cpu(d.process(), d.worker_processes()) as cpu:
            out = _loop(count, once)
    return out, cpu


def phalanx_raw(d: PhalanxUnderTest, count: int) -> Timed:
    """The same round trip on a bare DEALER: ZeroMQ + phalanxd + worker pipe."""
    encode, decode = msgspec.msgpack.encode, msgspec.msgpack.decode
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(d.intake)

    # Like the Python client, ask for no ack (one message less per task);
    # a daemon that does not know the flag refuses it, and we drop it.
    request = {"op": "submit", "ack": False, "tasks": [{"task": NOOP, "id": "", "args": [0]}]}

    # Ids unique to this call: a repeated id would be answered from the
    # daemon's result cache without running (a later round would time that).
    run = os.urandom(4).hex()

    def once(i: int) -> None:
        task_id = f"raw-{run}-{i}"
        request["tasks"][0].update(id=task_id, args=[i])  # type: ignore[index]
        sock.send(encode(request))
        while True:
            if not sock.poll(10_000):
                raise TimeoutError("no result from phalanxd within 10 s")
            msg = decode(sock.recv())
            if msg.get("op") == "error" and "ack" in request:
                del request["ack"]
                return once(i)
            if msg.get("op") == "results" and any(r.get("id") == task_id for r in msg["results"]):
                return None

    try:
        _loop(WARMUP, lambda i: once(-1 - i))
        with _cpu(d.process(), d.worker_processes()) as cpu:
            out = _loop(count, once)
    finally:
        sock.close(linger=0)
        ctx.term()
    return out, cpu


def pool_apply(d: PhalanxUnderTest, count: int) -> Timed:
    with mp_pool(WORKERS) as pool:
        _loop(WARMUP, lambda i: pool.apply(tasks.noop, (i,)))
        with _cpu(None, psutil.Process().children()) as cpu:
            out = _loop(count, lambda i: pool.apply(tasks.noop, (i,)))
    return out, cpu


def ppe_submit(d: PhalanxUnderTest, count: int) -> Timed:
    with ProcessPoolExecutor(WORKERS) as ex:
        _loop(WARMUP, lambda i: ex.submit(tasks.noop, i).result())
        with _cpu(None, psutil.Process().children()) as cpu:
            out = _loop(count, lambda i: ex.submit(tasks.noop, i).result())
    return out, cpu


# ----------------------------------------------------------------- floors
def _zmq_echo(endpoint: str) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        frames = sock.recv_multipart()
        if frames[1] == b"q":
            break
        sock.send_multipart(frames)
    sock.close(linger=0)
    ctx.term()


def _pipe_echo(conn: Connection) -> None:
    while (data := conn.recv_bytes()) != b"q":
        conn.send_bytes(data)


def zmq_floor(d: PhalanxUnderTest, count: int) -> Timed:
    """A ZeroMQ ipc DEALER->ROUTER echo in another process: no daemon logic."""
    mp = multiprocessing.get_context("spawn")  # never fork a process holding a context
    with tempfile.TemporaryDirectory(prefix="phalanx-bench-echo-") as tmp:
        endpoint = f"ipc://{Path(tmp) / 'echo.sock'}"
        proc = mp.Process(target=_zmq_echo, args=(endpoint,), daemon=True)
        proc.start()
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        body = b"x" * 48

        def once(i: int) -> None:
            sock.send(body)
            if not sock.poll(10_000):
                raise TimeoutError("echo process did not answer")
            sock.recv()

        try:
            _loop(WARMUP, once)
            with _cpu(None, [psutil.Process(proc.pid)]) as cpu:
                out = _loop(count, once)
            sock.send(b"q")
            proc.join(5.0)
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
            sock.close(linger=0)
            ctx.term()
    return out, cpu


def pipe_floor(d: PhalanxUnderTest, count: int) -> Timed:
    """A multiprocessing Pipe echo: the supervisor-to-worker hop alone."""
    a, b = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=_pipe_echo, args=(b,), daemon=True)
    proc.start()
    b.close()
    body = b"x" * 48

    def once(i: int) -> None:
        a.send_bytes(body)
        a.recv_bytes()

    try:
        _loop(WARMUP, once)
        with _cpu(None, [psutil.Process(proc.pid)]) as cpu:
            out = _loop(count, once)
        a.send_bytes(b"q")
        proc.join(5.0)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        a.close()
    return out, cpu


VARIANTS: dict[str, tuple[str, Callable[[PhalanxUnderTest, int], Timed]]] = {
    "phalanx.apply": ("Phalanx apply()", phalanx_apply),
    "phalanx.submit.result": ("Phalanx submit().result()", phalanx),
    "phalanx.raw_dealer": ("(diag) Phalanx, bare DEALER, no client lib", phalanx_raw),
    "pool.apply": ("Pool.apply()", pool_apply),
    "ppe.submit.result": ("ProcessPoolExecutor.submit().result()", ppe_submit),
    "floor.zmq_echo": ("(floor) ZeroMQ ipc echo, no daemon", zmq_floor),
    "floor.pipe_echo": ("(floor) multiprocessing Pipe echo", pipe_floor),
}


def run(d: PhalanxUnderTest, count: int, rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, dict[str, float]] = {name: {} for name in VARIANTS}
    per_round_p50: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(rounds):
        for name, (_, fn) in VARIANTS.items():
            got, used = fn(d, count)
            samples[name].extend(got)
            for party, seconds in used.items():
                cpu[name][party] = cpu[name].get(party, 0.0) + seconds
            s = scaled(summary(got), 1e6, 1)
            per_round_p50[name].append(s["p50"])
            say(f"latency round {r + 1}/{rounds} {name:22s} p50 {s['p50']:7.1f} us"
                f"  p99 {s['p99']:8.1f} us  max {s['max']:8.1f} us")
    out: dict[str, Any] = {}
    for name, (label, _) in VARIANTS.items():
        xs = samples[name]
        out[name] = {
            "label": label,
            "unit": "us",
            **scaled(summary(xs), 1e6, 1),
            "per_round_p50": per_round_p50[name],
            "over_1ms": sum(1 for x in xs if x > 1e-3),
            "over_10ms": sum(1 for x in xs if x > 1e-2),
            "cpu_us_per_round_trip": {k: round(v / len(xs) * 1e6, 1) for k, v in cpu[name].items()},
        }
    return out
