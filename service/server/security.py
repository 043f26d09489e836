"""TLS, mutual TLS and the bearer token, read from the files the settings name.

Every file is read once at start; one that cannot be read, or does not hold what it should,
stops the server with one line naming the setting and the file.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from foldserve.core.access import AUTH_TOKEN_ENV, TokenCheck
from foldserve.server.config import ServeConfig


class SecurityError(Exception):
    """A TLS or token file that cannot be used; the message names the setting and the file."""


def _read(setting: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"--{setting} {path!r} cannot be read: {exc.strerror}") from None
    if not data.strip():
        raise SecurityError(f"--{setting} {path!r} is empty")
    return data


def _pem(setting: str, path: str, kind: str) -> bytes:
    data = _read(setting, path)
    if b"-----BEGIN " not in data or kind.encode() not in data:
        raise SecurityError(f"--{setting} {path!r} holds no PEM {kind}")
    return data


def server_credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, None for plaintext.

    With `tls_client_ca`, clients must present a certificate signed by one of its CAs.

    Raises:
        SecurityError: a file that cannot be read or holds no PEM of the right kind.
    """
    if not config.tls_cert:
        return None
    chain = _pem("tls-cert", config.tls_cert, "CERTIFICATE")
    key = _pem("tls-key", config.tls_key or "", "PRIVATE KEY")
    ca = (
        _pem("tls-client-ca", config.tls_client_ca, "CERTIFICATE") if config.tls_client_ca else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )


def token_check(config: ServeConfig) -> TokenCheck | None:
    """The bearer-token check of the prediction APIs, None when they are open.

    Raises:
        SecurityError: the token file cannot be read or is empty.
    """
    if config.auth_token_file:
        data = _read("auth-token-file", config.auth_token_file)
        try:
            token = data.decode().strip()
        except UnicodeDecodeError:
            raise SecurityError(
                f"--auth-token-file {config.auth_token_file!r} is not text"
            ) from None
    elif config.auth_token:
        token = config.auth_token.strip()
    else:
        return None
    if not token or any(c.isspace() for c in token):
        source = config.auth_token_file or AUTH_TOKEN_ENV
        raise SecurityError(f"the bearer token from {source} is empty or holds spaces")
    return TokenCheck(token)
