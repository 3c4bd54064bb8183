"""phalanxctl across several daemons: ``-s A -s B status``.

Each daemon keeps its control socket on its own host (ipc, 0600): this
reaches several daemons whose control endpoints this machine can open,
such as a few daemons on one host, or one per host through ssh
(docs/OPERATIONS.md, "Several hosts"). The control socket is never opened
to the network for it.

Only commands that read or that act the same on every daemon make sense
here; the others (tail -f, top, events, the shell) need one daemon. The
daemons are asked in parallel, each bounded by ``--timeout``, so one that
does not answer costs one timeout, not one per daemon before it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from supervisor.ctl.core import EXIT_USAGE, Ctl

FLEET_COMMANDS = ("status", "stats", "version", "pid", "avail", "config",
                  "pause", "resume", "reread", "update", "reload")
MAX_PARALLEL = 16  # threads asking daemons at once

RunCommand = Callable[[Ctl, str, list[str], str], int]


def run(ctl: Ctl, endpoints: list[str], name: str, argv: list[str],
        run_command: RunCommand) -> int:
    """Run one command on every endpoint; the worst exit code of all."""
    if name not in FLEET_COMMANDS:
        ctl.warn(f"{name!r} needs one daemon; with several --endpoint: "
                 + ", ".join(FLEET_COMMANDS))
        return EXIT_USAGE

    def one(endpoint: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        each = replace(ctl, endpoint=endpoint, out=out, err=err)
        code = run_command(each, name, argv, f"phalanxctl {name}")
        return code, out.getvalue(), err.getvalue()

    with ThreadPoolExecutor(min(MAX_PARALLEL, len(endpoints))) as pool:
        outcomes = list(pool.map(one, endpoints))
    if ctl.json or "--json" in argv:
        doc: dict[str, Any] = {}
        for endpoint, (code, out, err) in zip(endpoints, outcomes, strict=True):
            entry: dict[str, Any] = {"exit": code}
            if out.strip():
                entry["result"] = json.loads(out)
            if err.strip():
                entry["error"] = err.strip().removeprefix("phalanxctl: ")
            doc[endpoint] = entry
        ctl.dump(doc)
    else:
        for endpoint, (code, out, err) in zip(endpoints, outcomes, strict=True):
            ctl.say(f"== {endpoint} (exit {code})")
            ctl.say(out.rstrip("\n"))
            if err:
                ctl.err.write(err)
    return max(code for code, _, _ in outcomes)
