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
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

import supervisor
from supervisor import config as config_mod
from supervisor import ctlclient
from supervisor.client import Client, Subscriber, TaskError
from supervisor.config import Config
from supervisor.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_START, EXIT_INTERRUPTED = 0, 1, 2, 130
POISON_MODES = ("kill", "segv", "abort", "exit")
WINDOW = 5000  # tasks in flight at once: enough to keep workers busy
CHUNK = 1000
READY_TIMEOUT = 30.0
BUILTIN = "workers.builtin"


class CannotStart(Exception):
    """The daemon cannot be started; the message says why, in one line."""


def default_config_path() -> Path:
    return Path(supervisor.__file__).resolve().parent.parent / "config" / "phalanx.toml"


# ================================================================== preflight
def endpoint_problems(cfg: Config) -> list[str]:
    """Endpoints someone else already holds (checked before starting)."""
    problems = []
    for what, ep in (("intake", cfg.endpoints.intake), ("publisher", cfg.endpoints.publisher),
                     ("control", cfg.control_endpoint)):
        if ep.startswith("tcp://"):
            host, _, port = ep[len("tcp://"):].rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                # as libzmq does, so a port in TIME_WAIT counts as free
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host if host != "*" else "", int(port)))
                except OSError as exc:
                    problems.append(f"{what} port {port} ({ep}) is not free: {exc.strerror or exc}")
        elif ep.startswith("ipc://"):
            path = ep[len("ipc://"):]
            if os.path.exists(path):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    try:
                        s.connect(path)
                    except OSError:
                        continue  # a stale socket file; binding replaces it
                    problems.append(f"{what} socket {path} is in use (another phalanxd?)")
    return problems


# ===================================================================== daemon
class DaemonProcess:
    """phalanxd as a child in its own session, logging to a temp file."""

    def __init__(self, config_path: Path | None, cfg: Config) -> None:
        self.cfg = cfg
        self.log = tempfile.NamedTemporaryFile(prefix="phalanxd-demo-", suffix=".log", delete=False)
        exe = Path(sys.executable).with_name("phalanxd")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "supervisor"]
        if config_path is not None:
            cmd += ["--config", str(config_path)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid

    def first_error(self) -> str:
        """The daemon's own one-line complaint, else its last log line."""
        lines = Path(self.log.name).read_text(errors="replace").splitlines()
        for line in lines:
            if line.startswith("phalanxd:"):
                return line
        return lines[-1] if lines else "(no output)"

    def wait_ready(self, client: Client) -> list[dict[str, Any]]:
        """Until ping answers and every slot is RUNNING; CannotStart if not."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CannotStart(f"phalanxd exited with code {self.proc.returncode}: "
                                  f"{self.first_error()}")
            try:
                client.ping(timeout=0.5)
                status: list[dict[str, Any]] = ctlclient.call(
                    self.cfg.control_endpoint, "status", timeout=0.5)
            except (TimeoutError, ctlclient.Unreachable, ctlclient.ControlError):
                continue
            if status and all(s["state"] == "RUNNING" for s in status):
                return status
            time.sleep(0.05)  # polling an external process; nothing to wait on
        raise CannotStart(f"phalanxd not ready within {READY_TIMEOUT:g}s; log: {self.log.name}")

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float) -> int | None:
        """SIGTERM (the daemon drains), wait; None if it did not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Last resort: SIGKILL the daemon's whole session/process group."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def close(self) -> None:
        self.log.close()


# ================================================================== workers
class Workers:
    """Every worker process ever seen, to prove at the end that none is left.

    A pid is recorded only while it is the daemon's descendant, as a
    psutil.Process, which remembers its start time: a recycled pid can
    neither be reported as left behind nor killed by mistake.
    """

    def __init__(self, daemon_pid: int) -> None:
        self.daemon_pid = daemon_pid
        self.seen: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()

    def remember(self, pid: int) -> None:
        with self._lock:
            if pid in self.seen:
                return
            try:
                proc = psutil.Process(pid)
                if self.daemon_pid in {p.pid for p in proc.parents()}:
                    self.seen[pid] = proc
            except psutil.Error:
                pass  # already gone: nothing to check later

    def left(self, timeout: float = 2.0) -> list[int]:
        """Those still alive (zombies awaiting a reaper do not count)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                procs = list(self.seen.values())
            alive = [p.pid for p in procs if _alive(p)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)  # orphans may take a moment to be reaped

    def kill_all(self) -> None:
        with self._lock:
            procs = list(self.seen.values())
        for proc in procs:
            try:
                proc.kill()  # psutil checks the start time first
            except psutil.Error:
                pass


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ============================================================ watch (events)
@dataclass
class Watch:
    """What the publisher told us; written by the watch thread only."""

    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    result_ids: collections.Counter[str] = field(default_factory=collections.Counter)
    quarantined_ids: set[str] = field(default_factory=set)
    deaths: dict[int, collections.deque[float]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque))
    gaps: int = 0
    subscribed: threading.Event = field(default_factory=threading.Event)


def watch_main(endpoint: str, w: Watch, workers: Workers, stop: threading.Event) -> None:
    with Subscriber(endpoint, topics=["event.", "result."]) as sub:
        while not stop.is_set():
            msg = sub.recv(timeout=0.1)
            if msg is None:
                continue
            body = msg.body
            if msg.topic.startswith("result."):
                for r in body.get("results", []):
                    w.result_ids[r.get("id")] += 1
                continue
            kind = msg.topic[len("event."):]
            w.kinds[kind] += 1
            if kind == "supervisor.resumed":
                w.subscribed.set()
            elif kind == "worker.exited":
                w.deaths[body.get("slot", -1)].append(time.monotonic())
            elif kind == "worker.spawned" and body.get("pid"):
                workers.remember(body["pid"])
            elif kind == "task.quarantined":
                w.quarantined_ids.add(body.get("id", ""))
            w.gaps = sum(sub.gaps.values())


# ===================================================================== chaos
def kill_worker(pid: int, daemon_pid: int) -> bool:
    """SIGKILL ``pid`` if it is still one of the daemon's descendants.

    Where Linux offers a pidfd, it pins the process before the ancestry
    check, so a pid recycled since the status reply can never be hit.
    """
    fd = None
    try:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except (AttributeError, OSError):
            fd = None  # no pidfds here: the ancestry check must do
        if daemon_pid not in {p.pid for p in psutil.Process(pid).parents()}:
            return False
        if fd is None:
            os.kill(pid, signal.SIGKILL)
        else:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except (ProcessLookupError, psutil.Error):
        return False
    finally:
        if fd is not None:
            os.close(fd)


def chaos_main(cfg: Config, workers: Workers, interval: float, rng: random.Random,
               w: Watch, killed: list[int], stop: threading.Event) -> None:
    budget = max(1, cfg.restart.max_restarts - 4)
    period = cfg.restart.period
    while True:
        try:
            status = ctlclient.call(cfg.control_endpoint, "status", timeout=1.0)
        except (ctlclient.Unreachable, ctlclient.ControlError):
            status = []
        now = time.monotonic()
        victims = []
        for s in status:
            if not s["pid"]:
                continue
            workers.remember(s["pid"])
            recent = sum(1 for t in list(w.deaths.get(s["slot"], ())) if now - t < period)
            if s["state"] == "RUNNING" and recent < budget:
                victims.append(s["pid"])
        if victims:
            pid = rng.choice(victims)
            if kill_worker(pid, workers.daemon_pid):
                killed.append(pid)
        if stop.wait(interval):
            return


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


@dataclass
class Tally:
    """Futures' outcomes; counts are bumped only in the client's I/O thread."""

    futures: list[Future[Any]] = field(default_factory=list)
    expected: list[Any] = field(default_factory=list)  # echo's argument, else None
    resolutions: list[int] = field(default_factory=list)
    done: int = 0
    wake: threading.Event = field(default_factory=threading.Event)

    def add(self, fut: Future[Any], expected: Any) -> None:
        index = len(self.futures)
        self.futures.append(fut)
        self.expected.append(expected)
        self.resolutions.append(0)

        def resolved(_: Future[Any]) -> None:
            self.resolutions[index] += 1
            self.done += 1
            self.wake.set()

        fut.add_done_callback(resolved)


class Progress:
    """A \\r-redrawn line on a terminal; a line every few seconds otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = 0.0
        self.width = 0  # of the line drawn last, to blank what a shorter one leaves

    def show(self, done: int, killed: int, retries: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.1 if self.tty else 2.0):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        width = 30
        filled = width * done // max(self.total, 1)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                f"{rate:,.0f} tasks/s  killed {killed}  retries {retries}")
        if self.tty:
            pad = " " * max(0, self.width - len(line))
            self.width = len(line)
            sys.stderr.write("\r" + line + pad + ("\n" if final else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


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
                    tally.add(client.submit(f"{BUILTIN}:crash", mode), None)
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


# ==================================================================== summary
def outcome(tally: Tally, poison: list[tuple[int, str]]) -> dict[str, Any]:
    succeeded = wrong = 0
    failed: dict[str, dict[str, Any]] = {}
    for fut, want in zip(tally.futures, tally.expected, strict=True):
        if not fut.done():
            continue
        exc = fut.exception()
        if exc is None:
            succeeded += 1
            if want is not None and fut.result() != want:
                wrong += 1
            continue
        kind = exc.type if isinstance(exc, TaskError) else type(exc).__name__
        msg = exc.message if isinstance(exc, TaskError) else str(exc)
        entry = failed.setdefault(kind, {"count": 0, "example": msg})
        entry["count"] += 1
    poisoned = []
    for index, mode in poison:
        fut = tally.futures[index]
        exc = fut.exception() if fut.done() else None
        poisoned.append({
            "mode": mode,
            "id": exc.task_id if isinstance(exc, TaskError) else None,
            "type": exc.type if isinstance(exc, TaskError) else None,
            "message": exc.message if isinstance(exc, TaskError) else
            ("unresolved" if not fut.done() else "succeeded?!"),
        })
    return {"succeeded": succeeded, "failed_by_type": failed, "wrong_values": wrong,
            "poison": poisoned}


def render(s: dict[str, Any]) -> str:
    out = [f"Phalanx demo: {s['tasks']} tasks + {len(s['poison'])} poison tasks on "
           f"{s['workers']} workers, a worker SIGKILLed every {s['chaos_interval']:g}s",
           "", f"  {'submitted':<20}{s['submitted']:>8}",
           f"  {'succeeded':<20}{s['succeeded']:>8}",
           f"  {'failed':<20}{s['failed']:>8}"]
    for kind, e in sorted(s["failed_by_type"].items()):
        out.append(f"    {kind:<18}{e['count']:>8}   e.g. {e['example']}")
    out.append("  poison tasks:")
    for p in s["poison"]:
        mark = "quarantined" if p["quarantined"] else "NOT quarantined"
        out.append(f"    crash({p['mode']}){'':<{11 - len(p['mode'])}}{mark}: "
                   f"{p['type']}: {p['message']}")
    out += [
        f"  {'retried':<20}{s['retried']:>8}   (daemon counted {s['daemon_stats'].get('retried')})",
        f"  {'workers killed':<20}{s['workers_killed']:>8}   by this demo, SIGKILL by pid",
        f"  {'workers restarted':<20}{s['workers_restarted']:>8}   "
        f"({s['workers_exited']} exited; backoffs {s['backoffs']}, fatal {s['fatal']})",
        f"  {'quarantined':<20}{s['quarantined']:>8}",
        f"  {'LOST':<20}{s['lost']:>8}   futures not resolved exactly once",
        f"  {'duplicates':<20}{s['duplicates']:>8}   ids published more than once "
        f"({s['published_results']} results published, {s['published_missing']} missing, "
        f"{s['publish_gaps']} seq gaps)",
        f"  {'wrong values':<20}{s['wrong_values']:>8}",
        f"  {'throughput':<20}{s['throughput']:>8,.0f}   tasks/s "
        f"({s['stream_seconds']:.2f}s for {s['submitted']} tasks)",
        f"  {'daemon stop':<20}{s['daemon_exit_code']!s:>8}   exit code, "
        f"after {s['stop_seconds']:.2f}s; {len(s['workers_left'])} of the "
        f"{s['worker_processes_seen']} processes the daemon started are left",
        "", f"{'PASS' if s['ok'] else 'FAIL'}: " + "; ".join(s["verdict"]),
    ]
    return "\n".join(out)


def verdict(s: dict[str, Any]) -> tuple[list[str], bool]:
    """What went wrong, if anything; (notes, ok)."""
    bad = []
    if s["lost"]:
        bad.append(f"{s['lost']} tasks LOST")
    if s["duplicates"]:
        bad.append(f"{s['duplicates']} results duplicated")
    if s["wrong_values"]:
        bad.append(f"{s['wrong_values']} wrong values")
    if s["succeeded"] + s["failed"] != s["submitted"]:
        bad.append("succeeded + failed != submitted")
    if s["published_missing"] and not s["publish_gaps"]:
        bad.append(f"{s['published_missing']} results never published")
    if s["daemon_exit_code"] != 0:
        bad.append(f"daemon exit code {s['daemon_exit_code']}")
    if s["workers_left"]:
        bad.append(f"worker processes left behind: {s['workers_left']}")
    if bad:
        return bad, False
    return [f"all {s['submitted']} tasks answered exactly once, clean stop"], True


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
        config_path = None  # not a source checkout: the built-in defaults are the same
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as exc:
        print(f"demo: invalid config: {exc}", file=sys.stderr)
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


def subscribe_handshake(cfg: Config, w: Watch) -> None:
    """Wait until our subscription reaches the publisher.

    Subscriptions travel asynchronously; ``resume`` (a no-op on a daemon
    that is not paused) publishes an event, so repeat it until one arrives.
    """
    deadline = time.monotonic() + 10
    while not w.subscribed.wait(0.1):
        ctlclient.call(cfg.control_endpoint, "resume")
        if time.monotonic() > deadline:
            raise CannotStart("the subscriber never received the publisher's events")


def settle(cfg: Config, w: Watch, submitted: int) -> dict[str, Any]:
    """Let killed workers come back and the last results be published;
    return the daemon's stats (empty if it no longer answers)."""
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            status = ctlclient.call(cfg.control_endpoint, "status", timeout=1.0)
            if (all(s["state"] == "RUNNING" for s in status)
                    and w.kinds["worker.started"] >= w.kinds["worker.exited"]
                    and sum(w.result_ids.values()) >= submitted):
                break
            time.sleep(0.05)  # polling another process's state
        stats: dict[str, Any] = ctlclient.call(cfg.control_endpoint, "stats", timeout=1.0)
        return stats
    except (ctlclient.Unreachable, ctlclient.ControlError):
        return {}


def emergency_stop(daemon: DaemonProcess, workers: Workers) -> None:
    """Interrupted or failed: stop the daemon fast, whatever it was doing."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
    for proc in daemon.descendants():
        workers.remember(proc.pid)
    # First SIGTERM drains, second stops at once; then no more asking.
    if daemon.stop(2.0) is None and daemon.stop(daemon.cfg.shutdown.stop_timeout + 2) is None:
        daemon.kill()
    workers.kill_all()


def summarize(args: argparse.Namespace, cfg: Config, tally: Tally, poison: list[tuple[int, str]],
              w: Watch, killed: list[int], stats: dict[str, Any],
              elapsed: float) -> dict[str, Any]:
    o = outcome(tally, poison)
    failed = sum(e["count"] for e in o["failed_by_type"].values())
    submitted = len(tally.futures)
    for p in o["poison"]:
        p["quarantined"] = p["id"] in w.quarantined_ids
    return {
        "tasks": args.tasks,
        "workers": cfg.worker_count,
        "chaos_interval": args.chaos_interval,
        "submitted": submitted,
        "succeeded": o["succeeded"],
        "failed": failed,
        "failed_by_type": o["failed_by_type"],
        "poison": o["poison"],
        "retried": w.kinds["task.retried"],
        "workers_killed": len(killed),
        "workers_exited": w.kinds["worker.exited"],
        "workers_restarted": w.kinds["worker.started"],
        "backoffs": w.kinds["worker.backoff"],
        "fatal": w.kinds["worker.fatal"],
        "quarantined": w.kinds["task.quarantined"],
        "lost": sum(1 for r in tally.resolutions if r != 1),
        "duplicates": sum(1 for c in w.result_ids.values() if c > 1),
        "published_results": sum(w.result_ids.values()),
        "published_missing": max(0, submitted - len(w.result_ids)),
        "publish_gaps": w.gaps,
        "wrong_values": o["wrong_values"],
        "stream_seconds": round(elapsed, 3),
        "throughput": round(submitted / max(elapsed, 1e-9), 1),
        "daemon_stats": stats,
    }


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
