"""Raw HTTP/2 frames (RFC 9113) for the hostile peers: no HTTP/2 library, the bytes themselves.

Header blocks use HPACK literals without indexing or Huffman coding (RFC 7541 6.2.2), as
tests/integration/deploy_balancer.py builds HAProxy's health check.
"""

from __future__ import annotations

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
CANCEL = 0x8


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: 3-byte length, type, flags, 4-byte stream id, payload."""
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def _literal(name_index: int, value: str) -> bytes:
    prefix = bytes([name_index]) if name_index < 15 else bytes([0x0F, name_index - 15])
    return prefix + bytes([len(value)]) + value.encode()


def _literal_new_name(name: str, value: str) -> bytes:
    return bytes([0, len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def grpc_headers(path: str, authority: str = "chaos") -> bytes:
    """The header block of a gRPC call of `path`: POST, http, the path, content-type, te.

    Static table indices: 3 `:method POST`, 6 `:scheme http`, 4 `:path`, 1 `:authority`, 31
    `content-type`.
    """
    return (
        bytes([0x83, 0x86])
        + _literal(4, path)
        + _literal(1, authority)
        + _literal(31, "application/grpc")
        + _literal_new_name("te", "trailers")
    )


def opening() -> bytes:
    """What a client sends first: the preface and an empty SETTINGS frame."""
    return PREFACE + frame(SETTINGS, 0, 0)


def rapid_reset(first_stream: int, count: int, path: str) -> bytes:
    """`count` streams, each opened (HEADERS) and at once cancelled (RST_STREAM CANCEL): the
    rapid reset of CVE-2023-44487."""
    block = grpc_headers(path)
    out = bytearray()
    for stream in range(first_stream, first_stream + 2 * count, 2):
        out += frame(HEADERS, END_HEADERS, stream, block)
        out += frame(RST_STREAM, 0, stream, CANCEL.to_bytes(4, "big"))
    return bytes(out)


def pings(count: int) -> bytes:
    """`count` PING frames (each wants a PING ACK back)."""
    return b"".join(frame(PING, 0, 0, n.to_bytes(8, "big")) for n in range(count))


def settings(count: int) -> bytes:
    """`count` SETTINGS frames (each wants a SETTINGS ACK back)."""
    entry = (0x3).to_bytes(2, "big") + (100).to_bytes(4, "big")  # MAX_CONCURRENT_STREAMS 100
    return frame(SETTINGS, 0, 0, entry) * count
