"""CURVE keys: generate, load, and apply them to ZeroMQ sockets.

Any intake or publisher endpoint beyond loopback needs CURVE (config.py
refuses to start otherwise): ZeroMQ's CurveZMQ handshake encrypts the
connection and proves both sides hold their secret keys. The daemon then
lets in only clients whose public key is in its authorised directory
(supervisor/daemon/zap.py).

Key files use the format of czmq and ``zmq.auth`` (``NAME.key`` holds the
public key, ``NAME.key_secret`` both), so keys made by other ZeroMQ tools
work here and ours work there. Keys are Z85 text, 40 characters.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from supervisor.errors import CurveKeyError

_BANNER = """#   ****  Generated on {when} by phalanxctl keygen  ****
#   ZeroMQ CURVE {what} Certificate
{extra}
metadata
curve
    public-key = "{public}"
"""


def generate(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) in
    ``directory`` (created 0700 if absent); refuses to overwrite."""
    if not name or "/" in name or name.startswith("."):
        raise CurveKeyError(f"key name {name!r} must be a plain file name")
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    public, secret = zmq.curve_keypair()
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    pub_path, sec_path = d / f"{name}.key", d / f"{name}.key_secret"
    for path in (pub_path, sec_path):
        if path.exists():
            raise CurveKeyError(f"{path} exists; not overwriting a key")
    pub_text = _BANNER.format(when=when, what="Public", extra="", public=public.decode())
    sec_text = _BANNER.format(
        when=when, what="**Secret**", public=public.decode(),
        extra="#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.",
    ) + f'    secret-key = "{secret.decode()}"\n'
    _write(pub_path, pub_text, 0o644)
    _write(sec_path, sec_text, 0o600)  # born 0600: never readable by others
    return pub_path, sec_path


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def load_secret(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file that only its owner reads."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise CurveKeyError(f"secret key file {p}: {exc.strerror}") from None
    if mode & 0o077:
        raise CurveKeyError(f"secret key file {p} is mode {mode & 0o777:o}; it must be 0600")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"secret key file {p}: {exc}") from None
    if secret is None:
        raise CurveKeyError(f"{p} holds no secret-key (is it the .key, not the .key_secret?)")
    return public, secret


def load_public(key: str | bytes | os.PathLike[str]) -> bytes:
    """A public key: 40 Z85 characters as given, or read from a key file."""
    if isinstance(key, bytes | str) and len(key) == 40 and not os.path.exists(key):
        return key.encode() if isinstance(key, str) else key
    try:
        public, _ = zmq.auth.load_certificate(os.fsdecode(key))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"public key {key!r}: {exc}") from None
    return public


def authorized(directory: str | os.PathLike[str]) -> set[bytes]:
    """Public keys of the ``*.key`` files in ``directory``."""
    try:
        return set(zmq.auth.load_certificates(directory))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"authorized keys directory {directory}: {exc}") from None


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a client needs: the server's public key and its own pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_key: str | bytes | os.PathLike[str],
             secret_file: str | os.PathLike[str]) -> ClientKeys:
        """From the server's public key (Z85 or a ``.key`` file) and this
        client's ``.key_secret`` file."""
        public, secret = load_secret(secret_file)
        return cls(load_public(server_key), public, secret)

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Before connect: this socket speaks CURVE to that server."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def keys_by_endpoint(curve: ClientKeys | Mapping[str, ClientKeys] | None,
                     endpoints: Iterable[str]) -> dict[str, ClientKeys]:
    """One ClientKeys for every endpoint, or a map that must name each one."""
    eps = list(endpoints)
    if curve is None:
        return {}
    if isinstance(curve, ClientKeys):
        return dict.fromkeys(eps, curve)
    missing = [ep for ep in eps if ep not in curve]
    if missing:
        raise CurveKeyError(f"no CURVE keys given for {', '.join(missing)}")
    return {ep: curve[ep] for ep in eps}


def apply_server(sock: zmq.Socket[bytes], public: bytes, secret: bytes) -> None:
    """Before bind: this socket accepts only CURVE peers (checked by ZAP)."""
    sock.curve_server = True
    sock.curve_publickey = public
    sock.curve_secretkey = secret
