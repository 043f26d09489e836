"""The V2 REST workloads: `POST /v2/models/{name}/infer` with a JSON body, and with Triton's
binary tensor extension, and a check that a server answers them.

- JSON: `{"inputs": [{"name", "shape", "datatype": "FP32", "data": [...]}]}`, a flat list in
  row-major order; every output comes back as JSON.
- Binary (Triton's `binary_tensor_data` extension): the body is a JSON header followed by the
  input's raw little-endian bytes; the header names their size in the input's parameters
  (`binary_data_size`) and asks for every output as bytes (`"binary_data": true`); the request's
  `Inference-Header-Content-Length` header gives the JSON header's length. The reply is shaped
  the same way.

The load generator (h2load in HTTP/1.1 mode) sees status codes and body sizes only, so each
workload is first sent once here: `reply_bytes` fails on any status but 200 or a reply that does
not parse, and returns the size of the reply's body, which every later call must bring back.
"""

from __future__ import annotations

import http.client
import json
import time

import numpy as np

from foldserve.contract.layout import MODEL_NAME

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
CHECK_TIMEOUT_SECONDS = 30.0
# A server may log that it is up a moment before it accepts connections (uvicorn does).
CONNECT_SECONDS = 10.0


class RestError(RuntimeError):
    """A REST workload does not get a well-formed 200 answer; the message says why."""


def infer_path(model: str = MODEL_NAME) -> str:
    """The V2 REST path of a model's inference."""
    return f"/v2/models/{model}/infer"


def json_body(name: str, values: np.ndarray) -> bytes:
    """A V2 JSON infer request of one FP32 input `name` holding `values` (shape kept)."""
    tensor = {"name": name, "shape": list(values.shape), "datatype": "FP32"}
    tensor["data"] = values.astype(np.float32).ravel().tolist()
    return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()


def binary_body(name: str, values: np.ndarray, outputs: list[str]) -> tuple[bytes, int]:
    """A binary-extension infer request of one FP32 input `name` holding `values`, asking for
    `outputs` as bytes; return the body and the length of its JSON header."""
    raw = values.astype("<f4").tobytes()
    tensor = {"name": name, "shape": list(values.shape), "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    wanted = [{"name": output, "parameters": {"binary_data": True}} for output in outputs]
    header = json.dumps({"inputs": [tensor], "outputs": wanted}, separators=(",", ":")).encode()
    return header + raw, len(header)


def _tensor(entry: dict, data: np.ndarray) -> np.ndarray:
    if entry.get("datatype") != "FP32":
        raise RestError(f"{entry.get('name')!r}: datatype {entry.get('datatype')!r}, not FP32")
    return data.astype(np.float32).reshape(entry["shape"])


def parse_json(body: bytes, key: str = "inputs") -> dict[str, np.ndarray]:
    """The tensors of a V2 JSON body (`key`: "inputs" of a request, "outputs" of a reply), by
    name.

    Raises:
        RestError: not JSON, no tensors, or a tensor that is not FP32 of its shape.
    """
    try:
        document = json.loads(body)
        entries = document[key]
        tensors = {e["name"]: _tensor(e, np.asarray(e["data"], np.float32)) for e in entries}
    except (ValueError, KeyError, TypeError) as exc:
        raise RestError(f"not a V2 JSON body with {key}: {exc}") from None
    if not tensors:
        raise RestError(f"a V2 JSON body without {key}")
    return tensors


def parse_binary(body: bytes, header_length: int, key: str = "inputs") -> dict[str, np.ndarray]:
    """The tensors of a binary-extension body (JSON header of `header_length` bytes, then each
    tensor's bytes in order), by name; tensors without `binary_data_size` are read from JSON.

    Raises:
        RestError: a header that does not parse, or bytes that do not add up.
    """
    try:
        header = json.loads(body[:header_length])
        entries = header[key]
    except (ValueError, KeyError, TypeError) as exc:
        raise RestError(f"not a binary-extension header with {key}: {exc}") from None
    tensors, offset = {}, header_length
    for entry in entries:
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is None:
            data = np.asarray(entry.get("data"), np.float32)
        else:
            data = np.frombuffer(body[offset : offset + size], "<f4")
            offset += size
        tensors[entry["name"]] = _tensor(entry, data)
    if offset != len(body) or not tensors:
        raise RestError(f"{len(body) - offset} bytes of the body belong to no tensor")
    return tensors


def post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]):
    """POST `body` once (retrying a refused connection for a few seconds); return (status,
    headers, body) of the answer."""
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        connection = http.client.HTTPConnection(host, port, timeout=CHECK_TIMEOUT_SECONDS)
        try:
            connection.request("POST", path, body=body, headers=headers)
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            connection.close()


def check_reply(status: int, headers: dict[str, str], body: bytes) -> None:
    """Raise RestError unless (status, headers, body) is a 200 with outputs that parse."""
    if status != 200:
        raise RestError(f"HTTP {status}: {body[:200].decode(errors='replace')}")
    lower = {name.lower(): value for name, value in headers.items()}
    if lower.get("content-encoding", "identity") != "identity":
        raise RestError(f"a {lower['content-encoding']} body (asked for identity)")
    length = lower.get(HEADER_LENGTH.lower())
    if length is None:
        parse_json(body, "outputs")
    else:
        parse_binary(body, int(length), "outputs")
