"""``phalanxd`` command line: parse arguments, load config, run the loop.

Exit codes: 0 clean stop, 2 bad configuration, 3 start-up failure.
"""

from __future__ import annotations

import argparse
import os
import sys

from supervisor import __version__, config, logs
from supervisor.errors import ConfigError, StartupError

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STARTUP = 3


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
    from supervisor.daemon import Daemon  # after logging is set up

    daemon = Daemon(cfg)
    try:
        daemon.start()
    except StartupError as exc:
        print(f"phalanxd: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
