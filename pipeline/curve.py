"""CURVE (ZeroMQ's own authenticated encryption, RFC 26 / CurveZMQ) for the tcp endpoints.

Keys are ZeroMQ certificate files made by :func:`generate_keys` (``sarde keys``), which calls pyzmq's
``zmq.auth.create_certificates``: ``<name>.key`` holds the public key, ``<name>.key_secret`` the public
and the secret key (Z85 text). No cryptography is written here: libzmq does it, pyzmq's
``ThreadAuthenticator`` (ZAP) decides which client public keys may connect.

Roles (``transport.curve`` in the config):

* the **stage** is the CURVE server of its frames PULL socket and of the events PUB socket
  (``server_key``: its ``.key_secret``), and accepts only the clients whose public ``.key`` files are
  in ``authorized_keys`` (a folder);
* a **reader** or an events **subscriber** is a client: ``client_key`` (its ``.key_secret``) and
  ``server_public_key`` (the stage's ``.key``).

A client with a key that is not authorised completes no handshake: libzmq drops its connection and
none of its messages reaches the application. Secret keys are read from files and never logged.
"""
from __future__ import annotations

import logging
from pathlib import Path

import zmq

from engines.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["CurveError", "generate_keys", "load_keypair", "load_public_key", "make_server", "make_client",
           "start_authenticator", "is_loopback_endpoint"]


class CurveError(UserError, ValueError):
    """A key file is missing or not a ZeroMQ certificate; the message names the file."""


def generate_keys(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """A new CURVE key pair as ``out_dir/<name>.key`` (public) and ``<name>.key_secret``.

    Raises:
        CurveError: libzmq was built without CURVE, or the files exist already (never overwritten).
    """
    import zmq.auth

    if not zmq.has("curve"):
        raise CurveError("this libzmq has no CURVE support")
    out = Path(out_dir)
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise CurveError(f"{public} or {secret} exists already; choose another name or folder")
    out.mkdir(parents=True, exist_ok=True)
    public_path, secret_path = zmq.auth.create_certificates(str(out), name)
    Path(secret_path).chmod(0o600)
    return Path(public_path), Path(secret_path)


def load_keypair(path: str | Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` Z85 keys of a ``.key_secret`` certificate.

    Raises:
        CurveError: the file is missing, unreadable, or holds no secret key.
    """
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read CURVE key {path}: {exc.__class__.__name__}") from exc
    if not secret:
        raise CurveError(f"{path} holds no secret key: pass the .key_secret file made by `sarde keys`")
    return public, secret


def load_public_key(path: str | Path) -> bytes:
    """The Z85 public key of a ``.key`` (or ``.key_secret``) certificate.

    Raises:
        CurveError: the file is missing or unreadable.
    """
    import zmq.auth

    try:
        public, _secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read CURVE public key {path}: {exc.__class__.__name__}") from exc
    return public


def make_server(sock: zmq.Socket, keypair: tuple[bytes, bytes]) -> None:
    """Make ``sock`` a CURVE server with ``(public, secret)`` (before ``bind``)."""
    sock.curve_publickey, sock.curve_secretkey = keypair
    sock.curve_server = True


def make_client(sock: zmq.Socket, server_public: bytes, keypair: tuple[bytes, bytes]) -> None:
    """Make ``sock`` a CURVE client of the server ``server_public`` (before ``connect``)."""
    sock.curve_publickey, sock.curve_secretkey = keypair
    sock.curve_serverkey = server_public


def start_authenticator(ctx: zmq.Context, authorized_keys: str | Path):
    """A started ZAP authenticator on ``ctx`` that admits CURVE clients whose public keys are the
    ``*.key`` files in ``authorized_keys``; the caller stops it (``.stop()``).

    Raises:
        CurveError: ``authorized_keys`` is not a folder holding at least one ``.key`` file.
    """
    from zmq.auth.thread import ThreadAuthenticator

    folder = Path(authorized_keys)
    if not folder.is_dir() or not any(folder.glob("*.key")):
        raise CurveError(f"authorized_keys {folder} must be a folder with the readers' / subscribers' .key files")
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("pipeline.curve.zap"))
    auth.start()
    auth.configure_curve(domain="*", location=str(folder))
    return auth


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ``ipc://``/``inproc://`` endpoints and tcp ones on 127.0.0.0/8, ``::1`` or ``localhost``."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")
