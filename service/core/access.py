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

    The token is compared in constant time and never logged or echoed.
    """

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def check(self, headers: Headers | None) -> None:
        """Raises RequestError (UNAUTHENTICATED) unless the headers carry the token."""
        text = header(headers, AUTHORIZATION)
        if text is None:
            raise RequestError(
                Status.UNAUTHENTICATED,
                f"{AUTHORIZATION}: missing; send the header '{AUTHORIZATION}: Bearer <token>'",
            )
        scheme, _, token = text.partition(" ")
        valid = hmac.compare_digest(token.strip().encode(), self._token)
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
