"""phalanxctl's commands that keep running: tail -f, maintail -f, top, events.

Each stops cleanly on Ctrl-C (exit 0, no traceback), after ``--count``
events, or, for top, on ``q``. ``tail -f`` polls the daemon with the
offset the previous answer ended at: the daemon keeps each slot's output
in one buffer that outlives its worker processes, so following a slot
goes on through a crash and the restart that follows it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from supervisor.client import Subscriber
from supervisor.ctl import render
from supervisor.ctl.core import EXIT_OK, Ctl, Interrupt, UsageError

POLL_INTERVAL = 0.2  # tail -f: seconds between polls when nothing is new
CHUNK = 64 * 1024  # tail -f: bytes asked for per poll
DEFAULT_TAIL = 1600  # supervisorctl's default


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _follow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("-n", "--bytes", type=_nonneg, default=DEFAULT_TAIL, metavar="BYTES",
                   help=f"how much of the end to show first (default {DEFAULT_TAIL})")


def tail_args(p: argparse.ArgumentParser) -> None:
    _follow_args(p)
    p.add_argument("slot", type=_nonneg, metavar="SLOT")
    p.add_argument("stream", nargs="?", choices=("stdout", "stderr"), default="stdout")


def maintail_args(p: argparse.ArgumentParser) -> None:
    _follow_args(p)


# ------------------------------------------------------------------ tail
Fetch = Callable[[int | None, int], dict[str, Any]]


def _tail(ctl: Ctl, fetch: Fetch, ns: argparse.Namespace) -> int:
    # The daemon reads "bytes": 0 as its default, so -n 0 (only what comes
    # next) asks for one byte, to learn where the end is, and shows none.
    res = fetch(None, max(ns.bytes, 1))
    if ns.bytes == 0:
        res = {**res, "data": ""}
    _show_chunk(ctl, res, first=True)
    if not ns.follow:
        return EXIT_OK
    offset = res.get("offset", 0)
    with Interrupt() as stop:
        while not stop.requested:
            res = fetch(offset, CHUNK)
            if res.get("overflow"):
                ctl.warn("output was lost: the buffer overflowed before it could be read")
            _show_chunk(ctl, res, first=False)
            new = res.get("offset", offset)
            # Caught up: wait; still behind (a full chunk came): ask again now.
            if new - offset < CHUNK:
                stop.sleep(POLL_INTERVAL)
            offset = new
    return EXIT_OK


def _show_chunk(ctl: Ctl, res: dict[str, Any], first: bool) -> None:
    if ctl.json:
        if first or res.get("data") or res.get("overflow"):
            print(json.dumps(res), file=ctl.out, flush=True)
        return
    data = res.get("data") or ""
    if data:
        ctl.out.write(data)
        ctl.out.flush()


def cmd_tail(ctl: Ctl, ns: argparse.Namespace) -> int:
    def fetch(offset: int | None, nbytes: int) -> dict[str, Any]:
        args = {"slot": ns.slot, "stream": ns.stream, "offset": offset, "bytes": nbytes}
        return ctl.call("tail", args)  # type: ignore[no-any-return]

    return _tail(ctl, fetch, ns)


def cmd_maintail(ctl: Ctl, ns: argparse.Namespace) -> int:
    def fetch(offset: int | None, nbytes: int) -> dict[str, Any]:
        return ctl.call("maintail", {"offset": offset, "bytes": nbytes})  # type: ignore[no-any-return]

    return _tail(ctl, fetch, ns)


# ------------------------------------------------------------------- top
def top_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("-n", "--iterations", type=_nonneg, default=0, metavar="N",
                   help="stop after N refreshes (default: until q or Ctrl-C)")
    p.add_argument("-d", "--delay", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between refreshes (default 1)")


@contextlib.contextmanager
def _screen(ctl: Ctl) -> Iterator[int | None]:
    """Alternate screen and single-key input; yields stdin's fd (None if not a tty)."""
    if not (ctl.out.isatty() and sys.stdin.isatty()):
        yield None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    ctl.out.write("\x1b[?1049h\x1b[?25l")  # alternate screen, hide cursor
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        ctl.out.write("\x1b[?25h\x1b[?1049l")
        ctl.out.flush()


def _quit_pressed(fd: int | None, wait: float, stop: Interrupt) -> bool:
    """Wait ``wait`` seconds; True if q or Ctrl-C came meanwhile."""
    if fd is None:
        return stop.sleep(wait)
    deadline = time.monotonic() + wait
    while not stop.requested and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], min(left, 0.1))
        if ready and os.read(fd, 1) in (b"q", b"Q"):
            return True
    return stop.requested


def cmd_top(ctl: Ctl, ns: argparse.Namespace) -> int:
    if ns.delay <= 0:
        raise UsageError("top: --delay must be > 0")
    frames = 1 if ns.once else ns.iterations
    shown = 0
    screen = _screen(ctl) if not (ns.once or ctl.json) else contextlib.nullcontext()
    with Interrupt() as stop, screen as fd:
        while not stop.requested:
            st = ctl.call("stats", {})
            slots = ctl.call("status", {})
            now = time.time()
            if ctl.json:
                line = {"time": now, "stats": st, "status": slots}
                print(json.dumps(line, default=str), file=ctl.out, flush=True)
            else:
                clear = "\x1b[H\x1b[2J" if fd is not None else ""
                hint = "\n(q to quit)" if fd is not None else ""
                ctl.out.write(clear + render.top_frame(st, slots, now) + "\n" + hint)
                ctl.out.flush()
            shown += 1
            if (frames and shown >= frames) or _quit_pressed(fd, ns.delay, stop):
                break
            if fd is None and not ctl.json:
                ctl.out.write("\n")  # frames one after another: a blank line between
    return EXIT_OK


# ---------------------------------------------------------------- events
def events_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("topics", nargs="*", metavar="TOPIC-PREFIX",
                   help="topic prefixes to subscribe to (default: event.)")
    p.add_argument("--publisher", metavar="ENDPOINT",
                   help="the daemon's publisher endpoint (default: asked from the daemon)")
    p.add_argument("--count", type=_nonneg, default=0, metavar="N",
                   help="stop after N messages")


def connectable(endpoint: str) -> str:
    """A bind address (``tcp://*:7456``, ``tcp://0.0.0.0:7456``) as one to connect to."""
    for wildcard in ("tcp://*:", "tcp://0.0.0.0:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard):]
    if endpoint.startswith("tcp://[::]:"):
        return "tcp://[::1]:" + endpoint[len("tcp://[::]:"):]
    return endpoint


def cmd_events(ctl: Ctl, ns: argparse.Namespace) -> int:
    endpoint = ns.publisher or ctl.call("config", {})["endpoints"]["publisher"]
    topics = ns.topics or ["event."]
    seen = 0
    with Interrupt() as stop, Subscriber(connectable(endpoint), topics=topics) as sub:
        while not stop.requested and (not ns.count or seen < ns.count):
            msg = sub.recv(timeout=0.2)
            if msg is None:
                continue
            seen += 1
            if ctl.json:
                line = json.dumps({"topic": msg.topic, "body": msg.body}, default=str)
                print(line, file=ctl.out, flush=True)
            else:
                for text in render.event_lines(msg.topic, msg.body, time.time()):
                    print(text, file=ctl.out, flush=True)
    return EXIT_OK
