"""``phalanxctl keygen DIR [NAME]``: a CURVE key pair for a daemon or a client.

Writes ``DIR/NAME.key`` (the public key: copy it to the other side) and
``DIR/NAME.key_secret`` (mode 0600: stays where it was made). A daemon's
config names its ``.key_secret`` in ``curve.secret_key_file``; each
client's ``.key`` goes into the daemon's ``curve.authorized_keys_dir``.
Needs no daemon.
"""

from __future__ import annotations

import argparse
import socket

from supervisor import curve
from supervisor.ctl.core import EXIT_FAILED, EXIT_OK, Ctl, HelpShown, Parser, UsageError
from supervisor.errors import CurveKeyError


def parser() -> Parser:
    p = Parser(prog="phalanxctl keygen",
               description="write a CURVE key pair: NAME.key (public), NAME.key_secret (0600)")
    p.add_argument("dir", metavar="DIR", help="directory for the two files (created 0700)")
    p.add_argument("name", nargs="?", default=socket.gethostname().split(".")[0],
                   metavar="NAME", help="file name without extension (default: host name)")
    p.add_argument("--json", action="store_true", help="print the paths and key as JSON")
    return p


def cmd_keygen(ctl: Ctl, argv: list[str]) -> int:
    try:
        ns: argparse.Namespace = parser().parse_args(argv)
    except HelpShown:
        return EXIT_OK
    except UsageError as exc:
        ctl.err.write(exc.usage)
        ctl.warn(exc.message)
        return exc.code
    try:
        public_path, secret_path = curve.generate(ns.dir, ns.name)
    except (CurveKeyError, OSError) as exc:
        ctl.warn(f"keygen: {exc}")
        return EXIT_FAILED
    public = curve.load_public(public_path).decode()
    result = {"public_key": public, "public_file": str(public_path),
              "secret_file": str(secret_path)}
    ctl.json = ctl.json or ns.json
    ctl.show(result, lambda r: f"public key {r['public_key']}\n"
                               f"  {r['public_file']}  (give this to the other side)\n"
                               f"  {r['secret_file']}  (0600; keep it here)")
    return EXIT_OK
