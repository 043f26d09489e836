"""Who may call, and what is written down about each call: the bearer token and the access log."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from typing import Any

import grpc

from service.core.errors import RequestError, Status

access_log = logging.getLogger("service.access")

AUTHORIZATION = "authorization"
REQUEST_ID_HEADER = "x-request-id"


class TokenCheck:
    """Bearer-token authentication: `authorization: Bearer <token>` in the call's metadata.

    The token is compared in constant time and never logged or echoed.
    """

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def check(self, metadata: Iterable[tuple[str, Any]] | None) -> None:
        """Raises RequestError (UNAUTHENTICATED) unless the metadata carries the token."""
        value = next((v for k, v in metadata or () if k == AUTHORIZATION), None)
        if value is None:
            raise RequestError(
                Status.UNAUTHENTICATED,
                f"{AUTHORIZATION}: missing; send the metadata '{AUTHORIZATION}: Bearer <token>'",
            )
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.partition(" ")
        valid = hmac.compare_digest(token.strip().encode(), self._token)
        if scheme.lower() != "bearer" or not valid:
            raise RequestError(
                Status.UNAUTHENTICATED,
                f"{AUTHORIZATION}: not a valid bearer token for this server",
            )


class AccessLog:
    """One log record per call (per message of a stream), with its fields as attributes, so the
    JSON log format writes them as fields: method, code, duration_ms, peer, request_id,
    model_version."""

    def write(
        self,
        method: str,
        code: str,
        seconds: float,
        context: grpc.ServicerContext,
        request: Any,
        version: str,
    ) -> None:
        fields = {
            "method": method,
            "code": code,
            "duration_ms": round(seconds * 1e3, 3),
            "peer": context.peer(),
            "request_id": _request_id(request, context),
            "model_version": version,
        }
        access_log.info(
            "%s %s %.3f ms peer=%s request_id=%s version=%s", *fields.values(), extra=fields
        )


def _request_id(request: Any, context: grpc.ServicerContext) -> str:
    """The caller's id for the call: the request's `request_id` or `id`, else `x-request-id`."""
    for field in ("request_id", "id"):
        value = getattr(request, field, "")
        if value:
            return str(value)[:128]
    metadata = context.invocation_metadata() or ()
    return next((str(v)[:128] for k, v in metadata if k == REQUEST_ID_HEADER), "")
