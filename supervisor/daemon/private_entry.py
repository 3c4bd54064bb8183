"""The private daemon's entry point: ``python -m supervisor.daemon.private_entry``.

Started by supervisor/pool/private.py, never by hand. No config file: the
owner writes one JSON line on our stdin (a ``Spec``: the Config built in
code and the owner's ``sys.path``), then keeps the pipe open. The same pipe
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


def _watch_owner(parent: int) -> None:
    fd = sys.stdin.fileno()
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
