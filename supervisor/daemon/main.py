"""``phalanxd`` command line: parse arguments, load config, run the loop.

Exit codes: 0 clean stop, 2 bad configuration, 3 start-up failure,
4 the journal is unusable (corrupt, locked by another phalanxd, unwritable),
70 (EX_SOFTWARE) an unexpected error in the loop: a bug, reported with its
traceback, after which every worker was killed.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable

from supervisor import __version__, config
from supervisor.daemon import logs
from supervisor.errors import ConfigError, JournalError, StartupError

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STARTUP = 3
EXIT_JOURNAL = 4
EXIT_CRASH = 70


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="phalanxd", description="Fault-tolerant worker supervisor.")
    p.add_argument("--config", "-c", metavar="PATH", default=os.environ.get("PHALANX_CONFIG"),
                   help="TOML config file (default: built-in defaults; env PHALANX_CONFIG)")
    p.add_argument("--check-config", metavar="PATH", help="validate PATH, print the result, exit")
    p.add_argument("--version", action="version", version=f"phalanxd {__version__}")
    return p


PROBE_TIMEOUT = 60.0  # seconds the allowed modules may take to import


def probe_modules(cfg: config.Config) -> list[str]:
    """Import ``tasks.allow`` in a child process, as a worker would (same
    tasks.path); return the task names. ConfigError names every module that
    failed to import and why, or says the import did not finish in time."""
    import multiprocessing

    from workers import probe

    ctx = multiprocessing.get_context("spawn")  # a clean interpreter, like a worker's
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=probe.main, args=(child, list(cfg.tasks.allow), cfg.task_path),
                       name="phalanx-probe")
    proc.start()
    child.close()
    try:
        if not parent.poll(PROBE_TIMEOUT):
            raise ConfigError(f"{cfg.source}: tasks.allow: importing the allowed modules "
                              f"did not finish within {PROBE_TIMEOUT:g}s")
        try:
            tasks, errors = parent.recv()
        except EOFError:
            proc.join(5)
            raise ConfigError(f"{cfg.source}: tasks.allow: the process importing the allowed "
                              f"modules died (exit code {proc.exitcode})") from None
    finally:
        parent.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if errors:
        where = ", ".join(cfg.task_path) or "the default sys.path"
        lines = "; ".join(f"{module}: {why}" for module, why in errors.items())
        raise ConfigError(f"{cfg.source}: tasks.allow: failed to import {lines} "
                          f"(task modules are imported from tasks.path: {where}, then sys.path)")
    return list(tasks)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.check_config:
        try:
            cfg = config.load(args.check_config)
        except ConfigError as exc:
            print(f"phalanxd: invalid config: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            tasks = probe_modules(cfg)
        except ConfigError as exc:
            print(f"phalanxd: invalid config: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"{args.check_config}: ok ({cfg.worker_count} workers, intake "
              f"{cfg.endpoints.intake}, {len(tasks)} tasks from {len(cfg.tasks.allow)} modules)")
        return EXIT_OK
    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        print(f"phalanxd: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return serve(cfg)


def serve(cfg: config.Config, on_started: Callable[[], None] | None = None) -> int:
    """Run a daemon with ``cfg`` until it stops; its exit code.

    ``on_started`` runs once every socket is bound (a private Pool's entry
    point tells its owner there, see supervisor/daemon/private_entry.py)."""
    logs.configure(cfg.daemon.log_level, cfg.daemon.log_format)
    from supervisor.daemon import shutdown
    from supervisor.daemon.daemon import Daemon  # after logging is set up

    daemon = Daemon(cfg)
    try:
        daemon.start()
    except StartupError as exc:
        print(f"phalanxd: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except JournalError as exc:
        print(f"phalanxd: {exc}", file=sys.stderr)
        return EXIT_JOURNAL
    if on_started is not None:
        on_started()
    from supervisor.daemon.observe.service import Observers

    try:
        observers = Observers.start(cfg)
    except StartupError as exc:
        print(f"phalanxd: cannot start: {exc}", file=sys.stderr)
        shutdown.stop_now(daemon)
        daemon.run()  # stops the workers it already started
        return EXIT_STARTUP
    try:
        code = daemon.run()
        observers.stop()
        return code
    except Exception:  # noqa: BLE001 - whatever escaped the loop is a bug; see below
        # Returning normally would hang: at interpreter exit multiprocessing
        # joins the (non-daemonic) workers, which wait on pipes this process
        # still holds, and SIGTERM only wakes a loop that no longer runs. A
        # daemon that holds its sockets and serves nobody is worse than one
        # that exits, so kill the workers and leave now; systemd restarts us.
        traceback.print_exc()
        daemon.pool.kill_all()
        sys.stderr.flush()
        os._exit(EXIT_CRASH)

if __name__ == "__main__":
    sys.exit(main())
