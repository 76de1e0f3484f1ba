"""Bearer-token authentication (Flight server middleware) and TLS files for ``streamlstm serve``."""

from __future__ import annotations

import hmac
import os
import ssl
from pathlib import Path
from typing import Any

import pyarrow.flight as flight

from streamlstm.errors import ConfigError

__all__ = ["BearerTokenAuth", "read_tls", "read_token"]


class BearerTokenAuth(flight.ServerMiddlewareFactory):
    """Refuse every call whose ``authorization`` header is not ``Bearer <token>`` (constant-time compare).

    Args:
        token (str): the shared secret.
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self._expected = f"Bearer {token}".encode()

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> None:
        for value in headers.get("authorization", ()):
            given = value.encode() if isinstance(value, str) else bytes(value)
            if hmac.compare_digest(given, self._expected):
                return None
        raise flight.FlightUnauthenticatedError("this server needs the header 'authorization: Bearer <token>' "
                                                "with the token of its --token-file")


def read_token(path: str | os.PathLike) -> str:
    """The token in ``path`` (surrounding whitespace removed); ConfigError when missing or empty."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from exc
    if not token or any(ch.isspace() for ch in token):
        raise ConfigError(f"--token-file {path} must hold one token without spaces, got "
                          f"{'an empty file' if not token else 'whitespace inside the token'}")
    return token


def read_tls(cert: str | os.PathLike | None, key: str | os.PathLike | None) -> tuple[bytes, bytes] | None:
    """The PEM certificate chain and private key, or None without TLS; both paths or neither."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError(f"TLS needs both --tls-cert and --tls-key, got only "
                          f"{'--tls-cert' if cert is not None else '--tls-key'}")
    pems = []
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{flag} {path} cannot be read: {exc.strerror or exc}") from exc
        if b"-----BEGIN " not in data:
            raise ConfigError(f"{flag} {path} must be a PEM file, got {len(data)} bytes without a PEM header")
        pems.append(data)
    _check_pair(cert, key, pems[0], pems[1])
    return pems[0], pems[1]


def _check_pair(cert: Any, key: Any, cert_pem: bytes, key_pem: bytes) -> None:
    """Name the wrong file before the server starts: a certificate that is not one, a key that is not
    one, files swapped, or a key that does not belong to the certificate."""
    swapped = b"PRIVATE KEY-----" in cert_pem and b"-----BEGIN CERTIFICATE-----" in key_pem
    if swapped:
        raise ConfigError(f"--tls-cert {cert} holds a private key and --tls-key {key} a certificate: swap them")
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise ConfigError(f"--tls-cert {cert} must hold a PEM certificate ('-----BEGIN CERTIFICATE-----')")
    if b"PRIVATE KEY-----" not in key_pem:
        raise ConfigError(f"--tls-key {key} must hold a PEM private key ('-----BEGIN ... PRIVATE KEY-----')")
    try:
        ssl.create_default_context().load_verify_locations(cadata=cert_pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"--tls-cert {cert} is not a valid PEM certificate: {_ssl_reason(exc)}") from exc
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, ValueError) as exc:
        if "MISMATCH" in str(exc).upper():
            raise ConfigError(f"--tls-key {key} is not the private key of the certificate in --tls-cert "
                              f"{cert}") from exc
        raise ConfigError(f"--tls-key {key} is not a valid PEM private key (an encrypted key is not supported): "
                          f"{_ssl_reason(exc)}") from exc


def _ssl_reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)
