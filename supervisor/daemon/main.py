"""``phalanxd`` command line: parse arguments, load config, run the loop.

Exit codes: 0 clean stop, 2 bad configuration, 3 start-up failure,
4 the journal is unusable (corrupt, locked by another phalanxd, unwritable),
70 (EX_SOFTWARE) an unexpected error in the loop: a bug, reported with its
traceback, after which every worker was killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback

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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.check_config:
        try:
            cfg = config.load(args.check_config)
        except ConfigError as exc:
            print(f"phalanxd: invalid config: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"{args.check_config}: ok ({cfg.worker_count} workers, intake {cfg.endpoints.intake})")
        return EXIT_OK
    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        print(f"phalanxd: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(cfg.daemon.log_level, cfg.daemon.log_format)
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
    try:
        return daemon.run()
    except Exception:  # noqa: BLE001 - whatever escaped the loop is a bug; see below
        # Returning normally would hang: at interpreter exit multiprocessing
        # joins the (non-daemonic) workers, which wait on pipes this process
        # still holds, and SIGTERM only wakes a loop that no longer runs. A
        # daemon that holds its sockets and serves nobody is worse than one
        # that exits, so kill the workers and leave now; systemd restarts us.
        traceback.print_exc()
        for slot in daemon.slots:
            if slot.handle is not None:
                slot.handle.signal_tree(signal.SIGKILL)
        sys.stderr.flush()
        os._exit(EXIT_CRASH)


if __name__ == "__main__":
    sys.exit(main())
