"""One wording for a failed call, shared by `foldserve predict` and `foldserve health`."""

from __future__ import annotations

import grpc

# How gRPC's C core starts the details of a call that found no server to connect to.
_CONNECT_FAILED = "failed to connect to all addresses"
_LAST_ERROR = "; last error: "


def describe_rpc_error(exc: grpc.RpcError) -> str:
    """`CODE: details` of a failed call, for one line on stderr.

    gRPC's long connect failure ("failed to connect to all addresses; last error: UNKNOWN:
    ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused") is shortened to its
    cause: "UNAVAILABLE: failed to connect (connection refused)".
    """
    code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    if detail and detail.startswith(_CONNECT_FAILED) and _LAST_ERROR in detail:
        cause = detail.rsplit(": ", 1)[-1].strip()
        detail = f"failed to connect ({cause[:1].lower()}{cause[1:]})"
    return f"{code}: {detail}"
