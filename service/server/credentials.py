"""The TLS certificate and the bearer tokens a server serves, replaced without a restart.

Every `--credentials-poll-seconds` (and at once on SIGHUP) the files of `--tls-cert`,
`--tls-key`, `--tls-client-ca` and `--auth-token-file` are read. Files whose bytes changed are
checked whole (`foldserve.server.security`) and, when good, serve from the next handshake (TLS)
or the next call (token) on: connections already open keep the certificate of their handshake,
and calls already admitted are not checked again. Files that are not good are refused with one
error line naming the file and counted; what was served before stays until the files change
again. Every worker of `--workers N` does the same for itself.

gRPC takes a new certificate through its certificate-configuration fetcher, which it asks before
every handshake; the HTTP port's context swaps in the new material's context as each handshake
starts (its server-name callback), so the chain, the key and the client CAs change together.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from foldserve.core.access import TokenCheck
from foldserve.server.config import ServeConfig
from foldserve.server.reload import Reloader
from foldserve.server.security import (
    SecurityError,
    TlsFiles,
    TlsMaterial,
    read_tls,
    read_tokens,
)

log = logging.getLogger(__name__)

TLS, TOKEN = "tls", "token"
WHAT = {TLS: "TLS certificate", TOKEN: "bearer token"}
# A pair written one file after the other (the certificate, then its key) looks bad in between:
# a change that does not check out is looked at once more after this long before it is refused.
SETTLE_SECONDS = 0.5


class CredentialMetrics:
    """The reloads of TLS and token files, by kind (`tls`, `token`) and result."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter(
            "foldserve_credentials_reloads_total",
            "Changed TLS or token files, by kind (tls, token) and result: loaded (served from "
            "the next connection or call on) or refused (the previous ones are still served).",
            ("kind", "result"),
            registry=registry,
        )
        self.refused = Gauge(
            "foldserve_credentials_refused",
            "1 while the TLS or token files on disk are refused and the previous ones are served.",
            ("kind",),
            registry=registry,
            multiprocess_mode="livemax",
        )

    def watch(self, kind: str) -> None:
        """Show the series of `kind` from the start, at zero."""
        for result in ("loaded", "refused"):
            self.reloads.labels(kind, result)
        self.refused.labels(kind).set(0)

    def count(self, kind: str, loaded: bool, changed: bool = True) -> None:
        if changed or not loaded:
            self.reloads.labels(kind, "loaded" if loaded else "refused").inc()
        self.refused.labels(kind).set(0 if loaded else 1)


def _snapshot(paths: tuple[str, ...]) -> tuple[bytes | str, ...]:
    """The bytes of each file, or why it cannot be read: what tells that files changed."""
    seen: list[bytes | str] = []
    for path in paths:
        try:
            seen.append(Path(path).read_bytes())
        except OSError as exc:
            seen.append(str(exc))
    return tuple(seen)


def fingerprint(chain: bytes) -> str:
    """The SHA-256 fingerprint of the first certificate of a PEM chain (as `openssl x509
    -fingerprint -sha256` shows it)."""
    first = chain.decode("ascii").split("-----END CERTIFICATE-----")[0]
    der = ssl.PEM_cert_to_DER_cert(first + "-----END CERTIFICATE-----\n")
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


class Credentials:
    """What the server's ports and calls are checked with, kept in step with the files.

    Raises:
        SecurityError: (at construction) a TLS or token file that cannot be used.
    """

    def __init__(self, config: ServeConfig, registry: CollectorRegistry) -> None:
        self._config = config
        self._files = TlsFiles.of(config)
        self._tls: TlsMaterial | None = read_tls(self._files) if self._files else None
        self._tokens = read_tokens(config)
        self.token = TokenCheck(self._tokens) if self._tokens else None
        self._watched: dict[str, tuple[str, ...]] = {}
        if self._files:
            self._watched[TLS] = self._files.paths
        if config.auth_token_file:
            self._watched[TOKEN] = (config.auth_token_file,)
        self._seen = {kind: _snapshot(paths) for kind, paths in self._watched.items()}
        self._metrics = CredentialMetrics(registry)
        for kind in self._watched:
            self._metrics.watch(kind)
        self._lock = threading.Lock()
        self._grpc_has = self._tls
        self._reloader = Reloader(self.refresh, config.credentials_poll_seconds, "credentials")

    # --- what the ports take ------------------------------------------------------------------

    def grpc_credentials(self) -> grpc.ServerCredentials | None:
        """The gRPC port's TLS credentials (None: plaintext), which follow the files."""
        if self._tls is None:
            return None
        return grpc.dynamic_ssl_server_credentials(
            self._tls.grpc_configuration(),
            self._grpc_fetch,
            require_client_authentication=self._tls.client_ca is not None,
        )

    def http_context(self) -> ssl.SSLContext | None:
        """The HTTP port's TLS context (None: plaintext), which follows the files."""
        if self._tls is None:
            return None
        context = self._tls.context
        context.sni_callback = self._pick_context
        return context

    def _grpc_fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC asks before every handshake: the new configuration once, else None (no change)."""
        tls = self._tls
        with self._lock:
            if tls is self._grpc_has:
                return None
            self._grpc_has = tls
        return tls.grpc_configuration() if tls is not None else None

    def _pick_context(self, ssl_object, _server_name, context: ssl.SSLContext) -> None:
        """As an HTTP handshake starts (with or without SNI): the current material's context."""
        current = self._tls.context if self._tls is not None else context
        if current is not context:
            ssl_object.context = current

    # --- following the files ------------------------------------------------------------------

    def start(self) -> None:
        """Look at the files every `--credentials-poll-seconds` (0: only on `trigger`)."""
        if self._watched:
            self._reloader.start()

    def trigger(self) -> None:
        """Look at the files now (SIGHUP; safe in a signal handler)."""
        self._reloader.trigger()

    def stop(self) -> None:
        self._reloader.stop()

    def refresh(self) -> None:
        """Look at every watched file; load what changed and checks out, refuse the rest."""
        for kind, paths in self._watched.items():
            now = _snapshot(paths)
            if now != self._seen[kind]:
                self._seen[kind] = self._reload(kind, paths)

    def _reload(self, kind: str, paths: tuple[str, ...]) -> tuple[bytes | str, ...]:
        """Load `kind` anew; what was seen of its files."""
        load = self._load_tls if kind == TLS else self._load_tokens
        seen = _snapshot(paths)
        try:
            try:
                found = load()
            except SecurityError:
                time.sleep(SETTLE_SECONDS)
                seen = _snapshot(paths)
                found = load()
        except SecurityError as exc:
            # The line first: whoever sees the count (a test, an alert) finds the reason logged.
            log.error("%s; still serving the previous %s", exc, WHAT[kind])
            self._metrics.count(kind, loaded=False)
            return seen
        self._metrics.count(kind, loaded=True, changed=self._serve(kind, found))
        return seen

    def _load_tls(self) -> TlsMaterial:
        assert self._files is not None
        return read_tls(self._files)

    def _load_tokens(self) -> tuple[str, ...]:
        tokens = read_tokens(self._config)
        assert tokens is not None  # the file is set, so it was read
        return tokens

    def _serve(self, kind: str, found) -> bool:
        """Serve what was found from now on; False when it is what was served already."""
        if kind == TLS:
            assert self._tls is not None and self._files is not None
            if found.contents == self._tls.contents:
                return False
            self._tls = found
            log.info(
                "new TLS certificate from %s (SHA-256 %s): new connections use it",
                self._files.cert,
                fingerprint(found.chain),
            )
            return True
        assert self.token is not None
        if found == self._tokens:
            return False
        self.token.replace(found)
        self._tokens = found
        log.info(
            "new bearer token from %s (%d accepted): calls from now on must carry it",
            self._config.auth_token_file,
            len(found),
        )
        return True
