"""The client side of TLS, mutual TLS and the bearer token, shared by every client command
(`foldserve predict`, `health`, `fuzz`): the same flags, one channel builder.

A file that cannot be read stops the command with one line naming the flag and the file
(`ChannelError`), before anything is sent.
"""

from __future__ import annotations

import argparse
import collections
import os
from pathlib import Path

import grpc

from foldserve.core.access import AUTH_TOKEN_ENV, AUTHORIZATION


class ChannelError(Exception):
    """A TLS or token file the client cannot use; the message names the flag and the file."""


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to `args.target` with the TLS settings and token the flags name.

    Raises:
        ChannelError: a file that cannot be read, or a key without a certificate (or the reverse).
    """
    credentials = _credentials(args)
    if credentials is None:
        channel = grpc.insecure_channel(args.target)
    else:
        options = []
        if getattr(args, "tls_server_name", None):
            options.append(("grpc.ssl_target_name_override", args.tls_server_name))
        channel = grpc.secure_channel(args.target, credentials, options=options)
    token = _token(args)
    if token is None:
        return channel
    return grpc.intercept_channel(channel, _BearerToken(token))


def _read(flag: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ChannelError(f"--{flag} {path!r} cannot be read: {exc.strerror}") from None
    if not data.strip():
        raise ChannelError(f"--{flag} {path!r} is empty")
    return data


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    ca, cert, key = (getattr(args, name, None) for name in ("tls_ca", "tls_cert", "tls_key"))
    if bool(cert) != bool(key):
        raise ChannelError("--tls-cert and --tls-key go together (a certificate and its key)")
    if not (getattr(args, "tls", False) or ca or cert):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read("tls-ca", ca) if ca else None,
        private_key=_read("tls-key", key) if key else None,
        certificate_chain=_read("tls-cert", cert) if cert else None,
    )


def _token(args: argparse.Namespace) -> str | None:
    path = getattr(args, "auth_token_file", None)
    if path:
        try:
            token = _read("auth-token-file", path).decode().strip()
        except UnicodeDecodeError:
            raise ChannelError(f"--auth-token-file {path!r} is not text") from None
    else:
        token = os.environ.get(AUTH_TOKEN_ENV, "").strip()
    return token or None


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call (over TLS or not: grpc's own
    access-token credentials refuse plaintext channels)."""

    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION, f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)
