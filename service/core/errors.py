"""How the core says that a request cannot be served: a status and a message naming the field;
and that a model file cannot be served (`ModelError`).

The core knows no gRPC: `Status` names the outcomes with the canonical status names and numbers
(google.rpc.Code, which gRPC uses too), and each API adapter maps them to its protocol.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Why a request failed: the canonical status name and number it maps to."""

    INVALID_ARGUMENT = 3  # the request is malformed
    DEADLINE_EXCEEDED = 4  # the caller's deadline passed
    NOT_FOUND = 5  # no such model or version
    RESOURCE_EXHAUSTED = 8  # over a limit
    FAILED_PRECONDITION = 9  # the model cannot answer this kind of request
    UNIMPLEMENTED = 12  # no such method
    INTERNAL = 13  # a bug of ours
    UNAVAILABLE = 14  # not serving right now; retry elsewhere
    UNAUTHENTICATED = 16  # no valid credentials


class ModelError(Exception):
    """A model file that cannot be served; the message names the file and what is wrong."""


class RequestError(Exception):
    """A request failed; the message names the field and what was expected.

    Args:
        status: the outcome the caller receives.
        message: e.g. "features: expected 64 float32 values (shape [64]), got 63".
    """

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def invalid(message: str) -> RequestError:
    """An INVALID_ARGUMENT error."""
    return RequestError(Status.INVALID_ARGUMENT, message)


def not_found(message: str) -> RequestError:
    """A NOT_FOUND error."""
    return RequestError(Status.NOT_FOUND, message)


def failed_precondition(message: str) -> RequestError:
    """A FAILED_PRECONDITION error: the model cannot answer this kind of request."""
    return RequestError(Status.FAILED_PRECONDITION, message)
