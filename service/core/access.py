"""Who may call, and what is written down about each call: the bearer token and the access log.

Both read a call's headers (gRPC metadata or HTTP headers, names lower-case) through the call, so
every protocol is checked and logged alike.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from typing import Any

from foldserve.core.errors import RequestError, Status

# The bearer token, for the prediction APIs (never a flag: flags show in `ps`).
AUTH_TOKEN_ENV = "FOLDSERVE_AUTH_TOKEN"


access_log = logging.getLogger("foldserve.access")

AUTHORIZATION = "authorization"
REQUEST_ID_HEADER = "x-request-id"
Headers = Iterable[tuple[str, Any]]


def header(headers: Headers | None, name: str) -> str | None:
    """The first value of header `name` (lower-case) as text, None when absent."""
    value = next((v for k, v in headers or () if k == name), None)
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class TokenCheck:
    """Bearer-token authentication: `authorization: Bearer <token>` in the call's headers.

    Any of the tokens given is accepted. Tokens are compared in constant time and never logged
    or echoed. `replace` swaps them for the calls admitted from then on.
    """

    def __init__(self, tokens: str | Iterable[str]) -> None:
        self._tokens: tuple[bytes, ...] = ()
        self.replace(tokens)

    def replace(self, tokens: str | Iterable[str]) -> None:
        """Accept these tokens, and no other, from the next call on (safe from any thread)."""
        tokens = (tokens,) if isinstance(tokens, str) else tuple(tokens)
        if not tokens:
            raise ValueError("a token check needs at least one token")
        self._tokens = tuple(token.encode() for token in tokens)

    def check(self, headers: Headers | None) -> None:
        """Raises RequestError (UNAUTHENTICATED) unless the headers carry a token."""
        text = header(headers, AUTHORIZATION)
        if text is None:
            raise RequestError(
                Status.UNAUTHENTICATED,
                f"{AUTHORIZATION}: missing; send the header '{AUTHORIZATION}: Bearer <token>'",
            )
        scheme, _, token = text.partition(" ")
        given = token.strip().encode()
        # Every token is compared (no early exit), so the time taken tells nothing.
        valid = False
        for known in self._tokens:
            valid |= hmac.compare_digest(given, known)
        if scheme.lower() != "bearer" or not valid:
            raise RequestError(
                Status.UNAUTHENTICATED,
                f"{AUTHORIZATION}: not a valid bearer token for this server",
            )


class AccessLog:
    """One log record per call (per message of a stream), with its fields as attributes, so the
    JSON log format writes them as fields: method, protocol, code, duration_ms, peer, request_id,
    model, model_version."""

    def write(
        self,
        method: str,
        protocol: str,
        code: str,
        seconds: float,
        peer: str,
        request_id: str,
        model: tuple[str, str],
    ) -> None:
        fields = {
            "method": method,
            "protocol": protocol,
            "code": code,
            "duration_ms": round(seconds * 1e3, 3),
            "peer": peer,
            "request_id": request_id[:128],
            "model": model[0],
            "model_version": model[1],
        }
        access_log.info(
            "%s %s %s %.3f ms peer=%s request_id=%s model=%s version=%s",
            *fields.values(),
            extra=fields,
        )
