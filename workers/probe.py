"""Import the allowed task modules the way a worker does, and say how it went.

``phalanxd --check-config`` runs this in a child process, so a module that
fails to import (a missing dependency, a syntax error, a wrong tasks.path)
is reported before the daemon is started, and the check itself cannot be
hurt by what the module does at import.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from workers import registry


def main(conn: Connection, allow: list[str], path: list[str]) -> None:
    """Send (task names, import errors by module) on ``conn``."""
    for folder in reversed(path):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    tasks, errors = registry.load(allow)
    conn.send((sorted(tasks), errors))
    conn.close()
