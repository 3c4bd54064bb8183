"""The private daemon's entry points: a fork of its owner (``run_forked``),
or ``python -m supervisor.daemon.private_entry`` (``main``).

Started by supervisor/pool/private.py, never by hand; which one follows
multiprocessing's start method (docs/POOL.md, "Start-up"). No config file.
Started by exec, the owner writes one JSON line on our stdin (a ``Spec``:
the Config built in code and the owner's ``sys.path``), then keeps the pipe
open; forked, we already have both, and the pipe is made our stdin. The same pipe
is how we learn the owner is gone: EOF on stdin (the owner closed the pool,
or died, even by SIGKILL: the kernel closes its end) or a new parent pid
makes us SIGTERM ourselves, which the daemon answers by draining and
stopping its workers. One tiny thread watches; the daemon's loop stays the
single thread that does anything (the thread only sends a signal).

Once every socket is bound we write ``ready`` on a pipe the owner passed
(``ready_fd``), its cue to connect. stdout and stderr stay the owner's: the
daemon's warnings and the workers' output appear where the owner's would.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import threading

import msgspec

from supervisor.config import Config

# How often the watcher also compares the parent pid (in case a forked
# child of the owner still holds the pipe's write end).
PARENT_CHECK = 1.0


class Spec(msgspec.Struct, frozen=True):
    config: Config
    sys_path: list[str]
    owner: int  # the owner's pid: a different parent means it is gone
    ready_fd: int  # where to write "ready" (stdout stays the owner's, for task output)


def _watch_owner(parent: int, fd: int = 0) -> None:
    while True:
        readable, _, _ = select.select([fd], [], [], PARENT_CHECK)
        if readable:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if data:
                continue  # nothing else is ever written; ignore
            break
        if os.getppid() != parent:
            break
    os.kill(os.getpid(), signal.SIGTERM)


def _start_forkserver_early(cfg: Config) -> None:
    """Start the fork server now, so that it imports its preload while this
    process imports the daemon (two interpreters starting side by side
    instead of one after the other: most of a Pool's start-up). The list is
    the daemon's own (Daemon.forkserver_preload); the daemon then finds the
    server running and uses it."""
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(
        ["supervisor.daemon.main", "multiprocessing.sharedctypes", "workers.loop",
         *cfg.tasks.allow, *cfg.workers.preload])
    forkserver.ensure_running()


def _ready(fd: int) -> None:
    try:
        os.write(fd, b"ready\n")
    finally:
        os.close(fd)


def _detach(stdin_fd: int, ready_fd: int, scrub_env: tuple[str, ...]) -> int:
    """In a fork of the owner: keep nothing of the owner's but its stdout,
    stderr and memory. Returns the ready fd's new number.

    The owner's other fds (its sockets, files, other pools' pipes, its own
    end of our stdin pipe) would otherwise live as long as we do: a port it
    closed stays bound, and we would never see EOF on our stdin. Its signal
    handlers and wakeup fd are for its own loop. ``gc.freeze`` keeps the
    collector away from the owner's objects: one of them dying here would
    close an fd number we may have reused."""
    gc.freeze()
    os.setsid()  # Ctrl-C in the terminal is for the owner, as with the exec start
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        try:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    high = 10 + max(stdin_fd, ready_fd)  # above both, so neither dup2 clobbers the other
    stdin_fd, ready_fd = os.dup2(stdin_fd, high), os.dup2(ready_fd, high + 1)
    os.dup2(stdin_fd, 0)
    os.dup2(ready_fd, 3)
    os.closerange(4, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
    # The owner's sys.std* may be anything (a test runner's capture, a
    # notebook's stream): ours are the fds, as in a fresh interpreter.
    sys.stdin = open(os.devnull, encoding="utf-8")
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False,
                      errors="backslashreplace")
    for name in scrub_env:
        os.environ.pop(name, None)
    return 3


def run_forked(cfg: Config, owner: int, stdin_fd: int, ready_fd: int,
               scrub_env: tuple[str, ...]) -> int:
    """The daemon in a fork of its owner: no interpreter to start, and the
    owner's imports (zmq, msgspec, structlog, the config) are already here.
    Its exit code; the caller leaves with ``os._exit``."""
    ready = _detach(stdin_fd, ready_fd, scrub_env)
    threading.Thread(target=_watch_owner, args=(owner,), name="owner-watch",
                     daemon=True).start()
    from supervisor.daemon.main import serve

    return serve(cfg, on_started=lambda: _ready(ready))


def main() -> int:
    line = sys.stdin.buffer.readline()
    try:
        spec = msgspec.json.decode(line, type=Spec)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"supervisor.daemon.private_entry: bad spec on stdin: {exc}", file=sys.stderr)
        return 2
    # The owner's import path, so workers import the owner's modules (the
    # forkserver inherits it from this process, as multiprocessing's spawn).
    sys.path[:] = spec.sys_path
    threading.Thread(target=_watch_owner, args=(spec.owner,), name="owner-watch",
                     daemon=True).start()
    if spec.config.workers.start_method == "forkserver":
        _start_forkserver_early(spec.config)
    from supervisor.daemon.main import serve

    return serve(spec.config, on_started=lambda: _ready(spec.ready_fd))


if __name__ == "__main__":
    sys.exit(main())
