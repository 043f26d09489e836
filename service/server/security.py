"""TLS, mutual TLS and the bearer tokens, read from the files the settings name and checked whole.

A certificate chain that parses, a private key that matches it, client CAs that parse, a token
file with one token a line: anything else is a `SecurityError` whose message names the setting
and the file. At start that stops the server; when the files change under a running server
(`foldserve.server.credentials`), the credentials it serves stay.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from foldserve.core.access import AUTH_TOKEN_ENV
from foldserve.server.config import ServeConfig


class SecurityError(Exception):
    """A TLS or token file that cannot be used; the message names the setting and the file."""


@dataclass(frozen=True)
class TlsFiles:
    """The files of `--tls-cert`, `--tls-key` and `--tls-client-ca` (None: no mutual TLS)."""

    cert: str
    key: str
    client_ca: str | None = None

    @classmethod
    def of(cls, config: ServeConfig) -> TlsFiles | None:
        """The TLS files `config` names, None when it serves plaintext."""
        if not config.tls_cert:
            return None
        return cls(config.tls_cert, config.tls_key or "", config.tls_client_ca)

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


@dataclass(frozen=True, eq=False)
class TlsMaterial:
    """One checked set of TLS files: their bytes (what gRPC takes) and the `ssl.SSLContext` the
    HTTP port's handshakes use."""

    chain: bytes
    key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext

    @property
    def contents(self) -> tuple[bytes | None, ...]:
        return (self.chain, self.key, self.client_ca)

    def grpc_configuration(self) -> grpc.ServerCertificateConfiguration:
        """This material as gRPC's certificate configuration."""
        return grpc.ssl_server_certificate_configuration(
            [(self.key, self.chain)], root_certificates=self.client_ca
        )


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


def _certificates(setting: str, path: str, data: bytes) -> str:
    """The PEM text of `data`, once OpenSSL has parsed every certificate in it."""
    try:
        text = data.decode("ascii")
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (UnicodeDecodeError, ssl.SSLError, ValueError) as exc:
        reason = "not PEM text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise SecurityError(f"--{setting} {path!r} holds no valid certificate: {reason}") from None
    return text


def _encrypted(files: TlsFiles):
    def refuse() -> str:
        raise SecurityError(f"--tls-key {files.key!r} is encrypted; give an unencrypted key")

    return refuse


def _context(files: TlsFiles, ca: str | None) -> ssl.SSLContext:
    """The HTTP port's context for these files (read again by OpenSSL: the caller checks that
    they did not change meanwhile)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key, password=_encrypted(files))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            reason = f"does not match the certificate in --tls-cert {files.cert!r}"
        else:
            reason = f"holds no usable private key: {exc}"
        raise SecurityError(f"--tls-key {files.key!r} {reason}") from None
    except OSError as exc:  # the file went away since it was read
        raise SecurityError(f"--tls-cert or --tls-key cannot be read: {exc.strerror}") from None
    if ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=ca)
    return context


def read_tls(files: TlsFiles) -> TlsMaterial:
    """Read and check the TLS files: the chain parses, the key matches it, the CAs parse.

    Raises:
        SecurityError: a file that cannot be read, does not parse, or a key that does not match;
            also files that changed while being read (a second look settles it).
    """
    chain = _pem("tls-cert", files.cert, "CERTIFICATE")
    key = _pem("tls-key", files.key, "PRIVATE KEY")
    ca = _pem("tls-client-ca", files.client_ca, "CERTIFICATE") if files.client_ca else None
    _certificates("tls-cert", files.cert, chain)
    ca_text = None if ca is None else _certificates("tls-client-ca", files.client_ca or "", ca)
    context = _context(files, ca_text)
    if tuple(_raw(path) for path in files.paths) != (chain, key, ca)[: len(files.paths)]:
        raise SecurityError(f"--tls-cert {files.cert!r} or its key changed while being read")
    return TlsMaterial(chain, key, ca, context)


def _raw(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def read_tokens(config: ServeConfig) -> tuple[str, ...] | None:
    """The bearer tokens the prediction APIs accept, None when they are open.

    `--auth-token-file` holds one token a line (more than one: any of them is accepted, so a
    rotation may overlap); `FOLDSERVE_AUTH_TOKEN` holds one.

    Raises:
        SecurityError: the token file cannot be read, is empty or a token holds spaces.
    """
    if config.auth_token_file:
        path = config.auth_token_file
        data = _read("auth-token-file", path)
        try:
            lines = data.decode().splitlines()
        except UnicodeDecodeError:
            raise SecurityError(f"--auth-token-file {path!r} is not text") from None
        tokens = tuple(line.strip() for line in lines if line.strip())
        source = f"--auth-token-file {path!r}"
    elif config.auth_token:
        tokens, source = (config.auth_token.strip(),), AUTH_TOKEN_ENV
    else:
        return None
    if not tokens or any(not t or any(c.isspace() for c in t) for t in tokens):
        raise SecurityError(f"the bearer token from {source} is empty or holds spaces")
    return tokens
