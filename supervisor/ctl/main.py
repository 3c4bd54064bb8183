"""phalanxctl: drive a running phalanxd, the way supervisorctl drives supervisord.

::

    phalanxctl [--config P] [--endpoint E] [--timeout S] [--json] [COMMAND [ARGS...]]

         argv --> global options --> endpoint (see find_endpoint)
                      |
          COMMAND given?  no --> shell.Shell: "phalanx> " prompt, each
                      |          line goes through run_command below
                      v
         run_command: commands.COMMANDS[name] -> parse its options
                      -> handler(Ctl, args) -> Ctl.call(cmd, args)
                      -> control socket (ipc, 0600) -> reply
                      -> render (text) or json.dumps (--json)
                      -> exit code (core: 0 1 2 3 4 7)

The modules of supervisor/ctl/: core (errors, exit codes, the Ctl
handle), connection (the control socket), commands (one handler per
command), slots, stream (tail -f, top, events), render (pure formatting),
shell (the interactive shell).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping

from supervisor import __version__, config
from supervisor.ctl import fleet
from supervisor.ctl.commands import COMMANDS, parse
from supervisor.ctl.core import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_SUCH,
    EXIT_OK,
    EXIT_USAGE,
    CommandFailed,
    Ctl,
    CtlFailure,
    HelpShown,
    NotReachable,
    UsageError,
)
from supervisor.errors import ConfigError


def global_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="phalanxctl",
        description="Control a running phalanxd. Without a command: an interactive shell.",
        epilog="Commands: " + ", ".join(COMMANDS) + ", keygen. 'phalanxctl help COMMAND' "
               "for one.",
    )
    p.add_argument("-c", "--config", metavar="PATH",
                   help="the daemon's config file: its control endpoint is used")
    p.add_argument("-s", "--endpoint", metavar="ENDPOINT", action="append",
                   help="control endpoint, e.g. ipc:///run/phalanx/control.sock "
                        "(env PHALANX_CONTROL); repeat it to run a command on "
                        "several daemons")
    p.add_argument("-t", "--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="seconds to wait for each reply (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--version", action="version", version=f"phalanxctl {__version__}")
    p.add_argument("command", nargs="?", metavar="COMMAND")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    return p


def find_endpoint(ns: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """The control endpoint; options beat the environment, endpoints beat configs.

    1. ``--endpoint``   2. ``--config`` file's   3. ``$PHALANX_CONTROL``
    4. ``$PHALANX_CONFIG`` file's (as phalanxd reads it)   5. the default,
    ``ipc://<runtime dir>/control.sock`` (see config.resolve_runtime_dir).
    """
    if ns.endpoint:
        return ns.endpoint if isinstance(ns.endpoint, str) else str(ns.endpoint[0])
    if ns.config:
        return config.load(ns.config).control_endpoint
    if environ.get("PHALANX_CONTROL"):
        return environ["PHALANX_CONTROL"]
    return config.load(environ.get("PHALANX_CONFIG") or None).control_endpoint


def run_command(ctl: Ctl, name: str, argv: list[str], prog: str) -> int:
    """Parse and run one command; print any error as one line; the exit code."""
    command = COMMANDS.get(name)
    if command is None:
        ctl.warn(f"unknown command {name!r}; try 'help'")
        return EXIT_USAGE
    try:
        ns = parse(command, argv, prog)
        session = dataclasses.replace(ctl, json=ctl.json or ns.json)
        return command.run(session, ns)
    except HelpShown:
        return EXIT_OK
    except UsageError as exc:
        if exc.usage:
            ctl.err.write(exc.usage)
        ctl.warn(exc.message)
        return exc.code
    except CommandFailed as exc:
        ctl.warn(exc.message)
        if command.status_codes and exc.type == "UnknownSlot":
            return EXIT_NO_SUCH
        return exc.code
    except NotReachable as exc:
        ctl.warn(exc.message)
        return EXIT_NO_SUCH if command.status_codes else exc.code
    except CtlFailure as exc:
        ctl.warn(exc.message)
        return exc.code
    except BrokenPipeError:
        # `phalanxctl events | head -1`: the reader has all it wanted.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # A reply of a shape this phalanxctl does not know (version skew).
        ctl.warn(f"unexpected reply to {name!r}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    ns = global_parser().parse_args(argv)
    try:
        endpoint = find_endpoint(ns, os.environ)
    except ConfigError as exc:
        print(f"phalanxctl: invalid config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if ns.timeout <= 0:
        print("phalanxctl: --timeout must be > 0", file=sys.stderr)
        return EXIT_USAGE
    ctl = Ctl(endpoint, timeout=ns.timeout, json=ns.json)
    if ns.command == "keygen":  # makes keys; talks to no daemon
        from supervisor.ctl.keygen import cmd_keygen

        return cmd_keygen(ctl, ns.args)
    if ns.endpoint and len(ns.endpoint) > 1:
        if ns.command is None:
            ctl.warn("the interactive shell needs one daemon: give one --endpoint")
            return EXIT_USAGE
        return fleet.run(ctl, ns.endpoint, ns.command, ns.args, run_command)
    if ns.command is None:
        from supervisor.ctl.shell import Shell

        return Shell(dataclasses.replace(ctl, interactive=True), run_command).run()
    try:
        return run_command(ctl, ns.command, ns.args, prog=f"phalanxctl {ns.command}")
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
