"""Start and stop the configured observers (called from main.py)."""

from __future__ import annotations

import threading

import structlog

from supervisor.config import Config
from supervisor.daemon.observe.link import ControlLink
from supervisor.errors import StartupError

log = structlog.get_logger("phalanxd")
JOIN_TIMEOUT = 5.0


class Observers:
    def __init__(self) -> None:
        self._links: list[ControlLink] = []
        self._servers: list[tuple[object, threading.Thread]] = []
        self._source: object | None = None

    @classmethod
    def start(cls, cfg: Config) -> Observers:
        """Bind what ``cfg.observe`` asks for; raises StartupError."""
        self = cls()
        ob = cfg.observe
        if not (ob.http or ob.xmlrpc):
            return self
        what = ""
        try:
            if ob.http:
                what = f"observe.http {ob.http}"
                self._start_http(cfg)
            if ob.xmlrpc:
                what = f"observe.xmlrpc {ob.xmlrpc}"
                self._start_xmlrpc(cfg)
        except OSError as exc:
            self.stop()
            raise StartupError(f"cannot start observe listener {what}: "
                               f"{exc.strerror or exc}") from None
        return self

    def _link(self, cfg: Config) -> ControlLink:
        link = ControlLink(cfg.control_endpoint)
        self._links.append(link)
        return link

    def _start_http(self, cfg: Config) -> None:
        from supervisor.daemon.observe import web
        from supervisor.daemon.observe.source import SnapshotSource

        source = SnapshotSource(self._link(cfg))
        self._source = source
        server = web.ObserveServer(cfg.observe, source)
        source.start()
        self._servers.append((server, web.serve(server)))

    def _start_xmlrpc(self, cfg: Config) -> None:
        from supervisor.daemon.observe import rpcserver
        from supervisor.daemon.observe.supervisorapi import Api

        wait = cfg.restart.start_timeout + cfg.shutdown.grace + cfg.shutdown.stop_timeout
        api = Api(self._link(cfg), wait_limit=wait)
        server = rpcserver.RpcServer(cfg.observe.xmlrpc, api, cfg.observe.max_clients)
        self._servers.append((server, rpcserver.serve(server)))

    def stop(self) -> None:
        """Stop serving; every join is bounded (JOIN_TIMEOUT each)."""
        from supervisor.daemon.observe.source import SnapshotSource

        for link in self._links:  # a handler waiting on the stopped loop lets go now
            link.close()
        self._links.clear()
        if isinstance(self._source, SnapshotSource):
            self._source.stop(JOIN_TIMEOUT)
        for server, thread in self._servers:
            stopping = getattr(server, "stopping", None)
            if stopping is not None:
                stopping.set()
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            thread.join(JOIN_TIMEOUT)
        self._servers.clear()
