"""The one exception type the servicers raise for a request that cannot be served."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """A request failed with a gRPC status; the message names the field and what was expected.

    Args:
        code: the status the caller receives (INVALID_ARGUMENT, NOT_FOUND, ...).
        message: human-readable detail, e.g. "features: expected 64 float32 values ..., got 63".
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ServiceError:
    """An INVALID_ARGUMENT error."""
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServiceError:
    """A NOT_FOUND error."""
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)
