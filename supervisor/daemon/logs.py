"""structlog set-up: JSON lines when stderr is not a terminal (journald,
files, pipes), key=value text when a person watches. Every line also goes
to an in-memory ring (``MAIN_LOG``) that ``phalanxctl maintail`` reads."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from supervisor.daemon.output import RingLog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}

MAIN_LOG = RingLog(256 * 1024)


class TeeLogger:
    """Writes each rendered line to a stream and to MAIN_LOG."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        MAIN_LOG.write(message.encode("utf-8", "replace") + b"\n")
        try:
            self._stream.write(message + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone (closed terminal); the ring still has it

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _factory(*args: Any) -> TeeLogger:
    return TeeLogger(sys.stderr)


def configure(level: str = "info", fmt: str = "auto") -> None:
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any
    if as_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=_factory,
        cache_logger_on_first_use=False,
    )
