"""``python -m supervisor.demo``: watch phalanxd lose nothing while workers die.

::

    this process                                          phalanxd (own session)
    ------------                                          ----------------------
    main thread   Client.submit, a bounded window  --tcp-->  intake --> worker slots
                  + 4 poison tasks (crash: kill, segv,          |     (each death is
                    abort, exit)                                |      replaced)
    chaos thread  control `status` -> SIGKILL one   --ipc-->  control
                  RUNNING worker by pid, ~5 per s               |
    watch thread  Subscriber("event.", "result.")  <--tcp--  publisher
                  counts retries, quarantines, restarts,
                  and every published result id
    main thread   progress on stderr, then the summary,
                  SIGTERM the daemon, check no worker is left

The verdict is computed from ids, not from the daemon's own counters: every
submitted future must resolve exactly once, and every id must be published
exactly once. Exit status: 0 all accounted for and a clean stop, 1 something
lost or duplicated or an unclean stop, 2 the daemon could not start, 130
interrupted.

Why the chaos monkey keeps to a restart budget: the daemon answers a crash
loop (more than ``restart.max_restarts`` deaths of one slot within
``restart.period``) with BACKOFF and eventually FATAL. That protection is
right for real crash loops, but this demo wants to show recovery, so it
skips a slot whose recent deaths are near that limit.

The parts live in ``daemon`` (start, stop and check phalanxd and its
workers), ``chaos`` (the chaos and watch threads) and ``report`` (tallies,
progress and the summary), all in supervisor/demo/; this module parses the arguments,
streams the tasks and runs the whole.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import supervisor
from supervisor import config as config_mod
from supervisor.client import Client
from supervisor.ctl import connection as ctlclient
from supervisor.demo import seed
from supervisor.demo.chaos import Watch, chaos_main, settle, subscribe_handshake, watch_main
from supervisor.demo.daemon import (
    CannotStart,
    DaemonProcess,
    Workers,
    emergency_stop,
    endpoint_problems,
)
from supervisor.demo.report import Progress, Tally, render, summarize, verdict
from supervisor.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_START, EXIT_INTERRUPTED = 0, 1, 2, 130
POISON_MODES = ("kill", "segv", "abort", "exit")
WINDOW = 5000  # tasks in flight at once: enough to keep workers busy
CHUNK = 1000
BUILTIN = "workers.builtin"
TESTING = "workers.testing"  # crash: not in the default allowlist, on purpose


def default_config_path() -> Path:
    return Path(supervisor.__file__).resolve().parent.parent / "config" / "demo.toml"


# ===================================================================== tasks
def make_task(i: int, rng: random.Random) -> tuple[str, tuple[Any, ...]]:
    """Mostly quick echoes; some sleeps, CPU burns and ordinary failures."""
    r = rng.random()
    if r < 0.06:
        return "sleep", (round(rng.uniform(0.001, 0.005), 4),)
    if r < 0.10:
        return "burn", (round(rng.uniform(0.0005, 0.002), 4),)
    if r < 0.15:
        return "fail", (f"task {i} failed on purpose",)
    return "echo", (i,)


def stream(client: Client, tally: Tally, n: int, rng: random.Random, deadline: float,
           progress: Progress, killed: list[int], w: Watch,
           daemon: DaemonProcess) -> list[tuple[int, str]]:
    """Submit ``n`` mixed tasks plus the poison ones; wait for every result.

    Returns (tally index, crash mode) of each poison task; they go in spread
    out over the stream.
    """
    poison_at: dict[int, list[str]] = collections.defaultdict(list)
    for k, mode in enumerate(POISON_MODES):
        poison_at[n * (k + 1) // (len(POISON_MODES) + 1)].append(mode)
    poison: list[tuple[int, str]] = []
    total = n + len(POISON_MODES)
    next_task = 0
    while True:
        while next_task < n and len(tally.futures) - tally.done < WINDOW:
            end = min(n, next_task + CHUNK)
            for i in range(next_task, end):
                for mode in poison_at.pop(i, ()):
                    poison.append((len(tally.futures), mode))
                    tally.add(client.submit(f"{TESTING}:crash", mode), None)
                name, args = make_task(i, rng)
                tally.add(client.submit(f"{BUILTIN}:{name}", *args),
                          args[0] if name == "echo" else None)
            next_task = end
        progress.show(tally.done, len(killed), w.kinds["task.retried"])
        if tally.done >= total or time.monotonic() > deadline:
            break
        if daemon.proc.poll() is not None:
            sys.stderr.write(f"\ndemo: phalanxd exited with code {daemon.proc.returncode} "
                             "mid-stream\n")
            break
        tally.wake.wait(0.1)
        tally.wake.clear()
    progress.show(tally.done, len(killed), w.kinds["task.retried"], final=True)
    return poison


# ======================================================================= run
@contextmanager
def terminate_means_interrupt() -> Iterator[None]:
    """SIGTERM to the demo cleans up exactly as Ctrl-C does."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> int:
    config_path: Path | None = Path(args.config) if args.config else default_config_path()
    if args.config is None and not default_config_path().exists():
        # Not a source checkout: the built-in defaults plus the demo's tasks.
        config_path = Path(tempfile.mkdtemp(prefix="pxdemo")) / "demo.toml"
        config_path.write_text(f'[tasks]\nallow = ["{BUILTIN}", "{TESTING}"]\n')
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as exc:
        print(f"demo: invalid config: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    missing = [m for m in (BUILTIN, TESTING) if m not in cfg.tasks.allow]
    if missing:
        print(f"demo: {config_path}: tasks.allow must list {', '.join(missing)} "
              f"(the demo's poison tasks are {TESTING}:crash); see config/demo.toml",
              file=sys.stderr)
        return EXIT_CANNOT_START
    problems = endpoint_problems(cfg)
    if problems:
        for p in problems:
            print(f"demo: cannot start phalanxd: {p}", file=sys.stderr)
        print("demo: stop whatever holds it (another phalanxd or demo?) or pass "
              "--config with other endpoints", file=sys.stderr)
        return EXIT_CANNOT_START

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    rng = random.Random(args.seed)
    daemon = DaemonProcess(config_path, cfg)
    workers = Workers(daemon.pid)
    client: Client | None = None
    watch_stop, chaos_stop = threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    try:
        say(f"demo: started phalanxd (pid {daemon.pid}, config {config_path or 'built-in'}, "
            f"log {daemon.log.name})")
        client = Client(cfg.endpoints.intake)
        status = daemon.wait_ready(client)
        for slot in status:
            workers.remember(slot["pid"])
        say(f"demo: phalanxd ready with {len(status)} workers; streaming {args.tasks} tasks "
            f"while killing a worker every {args.chaos_interval:g}s")
        w, killed = Watch(), list[int]()
        threads.append(threading.Thread(target=watch_main, name="demo-watch", daemon=True,
                                        args=(cfg.endpoints.publisher, w, workers, watch_stop)))
        threads[-1].start()
        subscribe_handshake(cfg, w)
        threads.append(threading.Thread(
            target=chaos_main, name="demo-chaos", daemon=True,
            args=(cfg, workers, args.chaos_interval, random.Random(rng.random()), w, killed,
                  chaos_stop)))
        threads[-1].start()
        tally = Tally()
        progress = Progress(args.tasks + len(POISON_MODES))
        started = time.monotonic()
        poison = stream(client, tally, args.tasks, rng, started + args.timeout, progress,
                        killed, w, daemon)
        elapsed = time.monotonic() - started
        chaos_stop.set()
        threads[1].join()
        stats = settle(cfg, w, len(tally.futures))
        watch_stop.set()
        threads[0].join()
        # Judged now, before closing the client could settle anything late.
        s = summarize(args, cfg, tally, poison, w, killed, stats, elapsed)
        for proc in daemon.descendants():
            workers.remember(proc.pid)  # includes the forkserver
        if tally.done == len(tally.futures):
            client.close()
            client.join(5)
        else:
            client.terminate()
        client = None
        stop_started = time.monotonic()
        exit_code = daemon.stop(cfg.shutdown.grace + cfg.shutdown.stop_timeout + 5)
        s["stop_seconds"] = round(time.monotonic() - stop_started, 3)
        if exit_code is None:
            daemon.kill()
        s["daemon_exit_code"] = exit_code
        s["worker_processes_seen"] = len(workers.seen)
        s["workers_left"] = workers.left()
        say("demo: now the seed's multiprocessing code on supervisor.Pool")
        s["pool"] = seed.run()
        s["verdict"], s["ok"] = verdict(s)
        print(json.dumps(s, indent=2) if args.json else render(s))
        return EXIT_OK if s["ok"] else EXIT_FAILED
    except CannotStart as exc:
        print(f"demo: cannot start phalanxd: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except (ctlclient.Unreachable, ctlclient.ControlError) as exc:
        print(f"demo: phalanxd's control socket failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ndemo: interrupted; stopping phalanxd", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        watch_stop.set()
        chaos_stop.set()
        if client is not None:
            client.terminate()
        if daemon.proc.poll() is None:
            emergency_stop(daemon, workers)
        for t in threads:
            t.join(2)
        daemon.close()
        if daemon.proc.returncode == 0 and not args.keep_log:
            os.unlink(daemon.log.name)
        else:
            print(f"demo: phalanxd log kept at {daemon.log.name}", file=sys.stderr)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m supervisor.demo",
        description="Start phalanxd, stream tasks through it while SIGKILLing its workers, "
                    "and prove from task ids that nothing was lost or duplicated.")
    p.add_argument("--config", metavar="PATH",
                   help="phalanxd config (default: config/phalanx.toml of this checkout)")
    p.add_argument("--tasks", type=positive_int, default=20000, metavar="N",
                   help="tasks to run, besides the 4 poison ones (20000)")
    p.add_argument("--chaos-interval", type=float, default=0.2, metavar="SECONDS",
                   help="SIGKILL a random worker this often (0.2)")
    p.add_argument("--seed", type=int, default=None, help="random seed (task mix and victims)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="give up waiting for results after this long; unresolved ones are LOST")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--keep-log", action="store_true",
                   help="keep phalanxd's log file even after a clean stop")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with terminate_means_interrupt():
        try:
            return run(args)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
