"""The supervisorctl listener: HTTP on a unix socket (0600), XML-RPC at /RPC2.

``supervisorctl -s unix:///path/to/socket status`` works against it as
against supervisord. POST /RPC2 runs one method from supervisorapi.METHODS
(or ``system.multicall`` over that same table); GET /logtail/NAME/CHANNEL
and GET /mainlogtail stream a log as ``tail -f`` and ``maintail -f`` expect.
The socket's permissions are the only gate: same user, same trust as the
control socket.
"""

from __future__ import annotations

import inspect
import os
import select
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from xmlrpc.client import Fault, dumps, loads

import structlog

from supervisor.daemon.observe.bounded import Bounded
from supervisor.daemon.observe.link import ControlUnavailable
from supervisor.daemon.observe.supervisorapi import METHODS, Api, Faults

log = structlog.get_logger("phalanxd")
MAX_BODY = 1024 * 1024  # bytes of one XML-RPC request
MAX_MULTICALL = 100  # calls in one system.multicall
FOLLOW_POLL = 0.2  # seconds between reads of a followed log
WRITE_TIMEOUT = 10.0


def dispatch(api: Api, method: str, params: tuple[Any, ...]) -> Any:
    if method == "system.listMethods":
        return sorted([*METHODS, "system.listMethods", "system.multicall"])
    if method == "system.multicall":
        calls = params[0] if params and isinstance(params[0], list) else None
        if calls is None or len(calls) > MAX_MULTICALL:
            raise Fault(Faults.INCORRECT_PARAMETERS, f"a list of at most {MAX_MULTICALL} calls")
        out: list[Any] = []
        for call in calls:
            name = call.get("methodName") if isinstance(call, dict) else None
            try:
                if name == "system.multicall" or not isinstance(name, str):
                    raise Fault(Faults.INCORRECT_PARAMETERS, "bad call in multicall")
                out.append([dispatch(api, name, tuple(call.get("params", ())))])
            except Fault as f:
                out.append({"faultCode": f.faultCode, "faultString": f.faultString})
        return out
    fn = METHODS.get(method)
    if fn is None:
        raise Fault(Faults.UNKNOWN_METHOD, f"UNKNOWN_METHOD: {method}")
    try:
        inspect.signature(fn).bind(api, *params)
    except TypeError:  # wrong number of arguments from the wire
        raise Fault(Faults.INCORRECT_PARAMETERS, method) from None
    return fn(api, *params)


class RpcServer(Bounded, socketserver.UnixStreamServer):
    def __init__(self, path: str, api: Api, max_clients: int) -> None:
        self.api = api
        self.path = path
        self.slots = threading.BoundedSemaphore(max_clients)
        self.stopping = threading.Event()
        if os.path.exists(path):
            os.unlink(path)  # a stale socket from a daemon that died; we hold the runtime lock
        old = os.umask(0o177)  # born 0600: no window in which others may connect
        try:
            super().__init__(path, Handler)
        finally:
            os.umask(old)

    def server_close(self) -> None:
        super().server_close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class Handler(BaseHTTPRequestHandler):
    server: RpcServer
    protocol_version = "HTTP/1.1"
    server_version = "phalanxd"
    sys_version = ""
    timeout = 30.0

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("observe_xmlrpc_request", request=format % args)

    def _send(self, code: int, body: bytes, ctype: str = "text/xml") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path not in ("/RPC2", "/"):
            self._send(404, b"not found\n", "text/plain")
            return
        try:
            length = int(self.headers.get("Content-Length") or "-1")
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(413, f"body must be 0..{MAX_BODY} bytes\n".encode(), "text/plain")
            return
        body = self.rfile.read(length)
        try:
            params, method = loads(body, use_builtin_types=True)
            if not isinstance(method, str):
                raise Fault(Faults.UNKNOWN_METHOD, "no method name")
            reply = dumps((dispatch(self.server.api, method, params),), methodresponse=True,
                          allow_none=True)
        except Fault as fault:
            reply = dumps(fault, methodresponse=True)
        except ControlUnavailable as exc:
            reply = dumps(Fault(Faults.FAILED, exc.message), methodresponse=True)
        except Exception as exc:  # noqa: BLE001 - bad XML or a bug: the client gets a fault, we go on
            log.warning("observe_xmlrpc_failed", error=repr(exc))
            reply = dumps(Fault(Faults.FAILED, f"{type(exc).__name__}: {exc}"),
                          methodresponse=True)
        self._send(200, reply.encode())

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        api = self.server.api
        try:
            if parts == ["mainlogtail"]:
                self._follow("maintail", {})
            elif len(parts) == 3 and parts[0] == "logtail" and parts[2] in ("stdout", "stderr"):
                self._follow("tail", {"slot": api.slot(parts[1]), "stream": parts[2]})
            else:
                self._send(404, b"not found\n", "text/plain")
        except Fault as fault:
            self._send(404, f"{fault.faultString}\n".encode(), "text/plain")

    def _follow(self, cmd: str, args: dict[str, Any]) -> None:
        """Stream a log, chunked, until the client leaves or we stop."""
        api = self.server.api
        first = api.call(cmd, {**args, "bytes": 1600})
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.connection.settimeout(WRITE_TIMEOUT)
        offset = first["offset"]
        data = first["data"]
        try:
            while not self.server.stopping.is_set():
                if data:
                    raw = data.encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
                    self.wfile.flush()
                if self.server.stopping.wait(FOLLOW_POLL) or self._peer_gone():
                    break
                try:
                    got = api.call(cmd, {**args, "offset": offset})
                except ControlUnavailable:
                    data = ""
                    continue
                data, offset = got["data"], got["offset"]
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # supervisorctl was stopped (Ctrl-C) or stopped reading


    def _peer_gone(self) -> bool:
        """The client hung up (Ctrl-C): readable with nothing to read."""
        try:
            ready, _, _ = select.select([self.connection], [], [], 0)
            return bool(ready) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True


def serve(server: RpcServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="phalanx-observe-xmlrpc", daemon=True)
    thread.start()
    log.info("observe_xmlrpc_listening", path=server.path)
    return thread
