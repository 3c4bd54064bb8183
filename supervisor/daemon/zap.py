"""CURVE on intake and publisher, and who may connect (ZAP, in the loop).

With ``[curve]`` configured, intake and publisher are CURVE servers with
the daemon's key pair. libzmq then asks a ZAP handler (RFC 27) about each
new connection: a REP socket bound at ``inproc://zeromq.zap.01`` in the
daemon's own context. We answer it from the main loop like every other
socket (``on_readable``), not from ``zmq.auth.ThreadAuthenticator``: the
daemon stays one thread, and a ZAP answer is one directory read, far
cheaper than the handshake that triggered it.

The authorised directory is read again on every new connection, so adding
or removing a ``.key`` file takes effect for the next connection without a
reload; existing connections are not cut.
"""

from __future__ import annotations

import structlog
import zmq
import zmq.utils.z85

from supervisor import curve
from supervisor.config import CurveSection
from supervisor.daemon.zmqio import has_input
from supervisor.errors import CurveKeyError, StartupError

log = structlog.get_logger("phalanxd")
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
# A ZAP request is six short frames plus a 32-byte key; anything bigger is
# not libzmq talking.
MAX_REQUEST_FRAMES = 16


class CurveGuard:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], cfg: CurveSection) -> None:
        try:
            self.public, self.secret = curve.load_secret(cfg.secret_key_file)
            self.dir = cfg.authorized_keys_dir
            curve.authorized(self.dir)  # readable now, or refuse to start
        except CurveKeyError as exc:
            raise StartupError(f"curve: {exc}") from None
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)
        self.allowed = 0
        self.refused = 0

    def protect(self, sock: zmq.Socket[bytes]) -> None:
        """Before bind: ``sock`` accepts CURVE peers only."""
        curve.apply_server(sock, self.public, self.secret)

    def on_readable(self) -> bool:
        """Answer every waiting ZAP request (until ZMQ_EVENTS is clear)."""
        while has_input(self.sock):
            frames = self.sock.recv_multipart(zmq.NOBLOCK)
            self.sock.send_multipart(self._answer(frames), zmq.NOBLOCK)
        return False

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        if len(frames) < 6 or len(frames) > MAX_REQUEST_FRAMES:
            request_id = frames[1] if len(frames) > 1 else b""
            return [b"1.0", request_id, b"500", b"malformed ZAP request", b"", b""]
        _version, request_id, _domain, address, _identity, mechanism = frames[:6]
        if mechanism != b"CURVE" or len(frames) != 7 or len(frames[6]) != 32:
            self.refused += 1
            log.warning("curve_client_refused", address=address.decode(errors="replace"),
                        reason=f"mechanism {mechanism.decode(errors='replace')}")
            return [b"1.0", request_id, b"400", b"CURVE required", b"", b""]
        key = zmq.utils.z85.encode(frames[6])
        try:
            allowed = key in curve.authorized(self.dir)
        except CurveKeyError as exc:  # the directory went away: refuse, say why
            log.error("curve_keys_unreadable", error=str(exc))
            allowed = False
        if not allowed:
            self.refused += 1
            log.warning("curve_client_refused", address=address.decode(errors="replace"),
                        key=key.decode(), reason="key not authorised")
            return [b"1.0", request_id, b"400", b"key not authorised", b"", b""]
        self.allowed += 1
        return [b"1.0", request_id, b"200", b"OK", key, b""]

    def close(self) -> None:
        self.sock.close(linger=0)


def guard(ctx: zmq.Context[zmq.Socket[bytes]], cfg: CurveSection) -> CurveGuard | None:
    """A CurveGuard when ``[curve]`` is configured, else None (no CURVE)."""
    return CurveGuard(ctx, cfg) if cfg.enabled else None


def protect(g: CurveGuard | None, sock: zmq.Socket[bytes]) -> None:
    if g is not None:
        g.protect(sock)
