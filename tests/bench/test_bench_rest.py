"""The V2 REST side of the benchmark: the JSON and binary-extension bodies, their check against a
stand-in V2 REST server (the tiny model behind the standard library's HTTP/1.1 server), h2load's
HTTP/1.1 mode against it, the `http_port=` a server reports, and who is measured on REST."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from foldserve.bench.baselines import echo
from foldserve.bench.suite import h2load, lineup, servers, workloads
from foldserve.bench.suite import rest_workloads as rest
from foldserve.bench.suite.peer import PEER_WORKLOADS
from foldserve.bench.suite.workloads import PREDICT, REST_BINARY, REST_JSON
from foldserve.core.model import Model


class _V2Rest(BaseHTTPRequestHandler):
    """POST /v2/models/foldserve/infer: JSON, or (where `binary`) Triton's binary extension."""

    protocol_version = "HTTP/1.1"  # keep-alive, as h2load --h1 expects
    model: Model
    binary = True
    seen: list[dict[str, str]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(dict(self.headers))
        header = self.headers.get(rest.HEADER_LENGTH)
        if self.path != rest.infer_path() or (header is not None and not self.binary):
            return self._send(400, b'{"error": "no"}', {})
        inputs = rest.parse_json(body) if header is None else rest.parse_binary(body, int(header))
        outputs = self.model.run_classifier(next(iter(inputs.values())))
        tensors = [
            {"name": n, "datatype": "FP32", "shape": list(a.shape)} for n, a in outputs.items()
        ]
        if header is None:
            for tensor, array in zip(tensors, outputs.values(), strict=True):
                tensor["data"] = array.ravel().tolist()
            return self._send(200, json.dumps({"outputs": tensors}).encode(), {})
        raw = [array.astype("<f4").tobytes() for array in outputs.values()]
        for tensor, data in zip(tensors, raw, strict=True):
            tensor["parameters"] = {"binary_data_size": len(data)}
        head = json.dumps({"outputs": tensors}).encode()
        self._send(200, head + b"".join(raw), {rest.HEADER_LENGTH: str(len(head))})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # quiet
        pass


def _stand_in(model: Model, binary: bool) -> Iterator[tuple[int, list]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_V2Rest,), {"model": model, "binary": binary, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def rest_server(tiny_model: Model) -> Iterator[tuple[int, list]]:
    """(port, headers of every request seen) of a stand-in serving both bodies."""
    yield from _stand_in(tiny_model, binary=True)


@pytest.fixture(scope="module")
def json_only(tiny_model: Model) -> Iterator[tuple[int, list]]:
    """A stand-in without the binary extension (as MLServer: a refusal)."""
    yield from _stand_in(tiny_model, binary=False)


@pytest.fixture(scope="module")
def rest_loads(tiny_model: Model) -> dict[str, workloads.Workload]:
    return workloads.rest_workloads(tiny_model.require_classifier())


def test_json_and_binary_bodies_parse_back_to_the_same_tensor(tiny_model: Model) -> None:
    values = workloads.example(tiny_model.require_classifier()).reshape(1, -1)
    from_json = rest.parse_json(rest.json_body("input", values))
    body, header = rest.binary_body("input", values, ["logits", "probabilities"])
    from_binary = rest.parse_binary(body, header)
    assert list(from_json) == list(from_binary) == ["input"]
    np.testing.assert_array_equal(from_json["input"], values)
    np.testing.assert_array_equal(from_binary["input"], values)
    head = json.loads(body[:header])
    assert head["inputs"][0]["parameters"] == {"binary_data_size": values.size * 4}
    assert [o["parameters"] for o in head["outputs"]] == [{"binary_data": True}] * 2
    assert len(body) == header + values.size * 4


def test_the_rest_workloads_carry_their_headers(rest_loads) -> None:
    binary, plain = rest_loads[REST_BINARY], rest_loads[REST_JSON]
    assert plain.protocol == binary.protocol == workloads.HTTP
    assert plain.path == binary.path == "/v2/models/foldserve/infer"
    assert plain.body == plain.message  # no gRPC framing
    headers = dict(h.split(": ", 1) for h in binary.headers)
    header = int(headers[rest.HEADER_LENGTH])
    assert json.loads(binary.body[:header])["outputs"] and len(binary.body) == header + 64 * 4
    assert "content-type: application/json" in plain.request_headers
    assert "accept-encoding: identity" in binary.request_headers


def test_bodies_that_do_not_add_up_are_refused() -> None:
    with pytest.raises(rest.RestError, match="bytes of the body belong to no tensor"):
        body, header = rest.binary_body("x", np.zeros((1, 4), np.float32), [])
        rest.parse_binary(body + b"extra", header)
    with pytest.raises(rest.RestError, match="not a V2 JSON body"):
        rest.parse_json(b"{}")
    with pytest.raises(rest.RestError, match="HTTP 500"):
        rest.check_reply(500, {}, b"Internal Server Error")


def test_the_check_reads_both_replies_and_reports_a_refusal(
    rest_server, json_only, rest_loads
) -> None:
    for name, workload in rest_loads.items():
        size = workloads.reply_bytes(f"127.0.0.1:{rest_server[0]}", workload)
        assert size > 80, name  # two outputs of ten FP32 values, at least
    with pytest.raises(workloads.WorkloadError, match="REST binary: HTTP 400"):
        workloads.reply_bytes(f"127.0.0.1:{json_only[0]}", rest_loads[REST_BINARY])


def test_h2load_drives_rest_over_http1(rest_server, rest_loads, tmp_path: Path) -> None:
    binary = shutil.which("h2load")
    if binary is None:
        pytest.skip("h2load is not installed (apt-get install nghttp2-client)")
    port, seen = rest_server
    generator = h2load.H2Load(binary, tmp_path)
    for workload in rest_loads.values():
        reply = workloads.reply_bytes(f"127.0.0.1:{port}", workload)
        seen.clear()
        run = generator.run(f"127.0.0.1:{port}", workload, reply, calls=20, connections=4)
        assert run.done == 20 and run.data_bytes == 20 * reply and len(run.latencies_us) == 20
        sent = {k.lower(): v for k, v in seen[-1].items()}
        for header in workload.headers:
            name, value = header.split(": ", 1)
            assert sent[name.lower()] == value


def test_the_http_port_comes_on_the_grpc_port_line() -> None:
    spec = servers.ServerSpec("foldserve", ("serve",))
    assert servers._up(spec, "starting\nserving ... grpc_port=5 metrics_port=6\n") == (5, None)
    assert servers._up(spec, "grpc_port=5 http_port=7 metrics_port=6\n") == (5, 7)
    assert servers._up(spec, "grpc_port=5 http_port=7") is None  # not a whole line yet
    fixed = servers.ServerSpec("mlserver", ("x",), ports=(1, 2), ready=("up", "loaded"))
    assert servers._up(fixed, "up\n") is None
    assert servers._up(fixed, "loaded\nup\n") == (1, 2)


@pytest.fixture(scope="module")
def grpc_echo() -> Iterator[int]:
    server, port = echo.start("127.0.0.1", echo.Echo())
    yield port
    server.stop(0)


def _check(started: dict, model: Model) -> lineup.Lineup:
    spec = model.require_classifier()
    every = {**workloads.unary_workloads(spec), **workloads.rest_workloads(spec)}
    return lineup.check(started, every, lambda text: None)


def test_rest_is_measured_where_foldserve_reports_its_port(
    grpc_echo, rest_server, json_only, tiny_model: Model
) -> None:
    ours = servers.ServerSpec("foldserve", ("x",), workloads=servers.FOLDSERVE_WORKLOADS)
    peer = servers.ServerSpec("mlserver", ("x",), workloads=PEER_WORKLOADS, ports=(1, 2))
    without = _check({"foldserve": servers.Server(ours, None, grpc_echo)}, tiny_model)
    assert without.serving[PREDICT] == ["foldserve"] and REST_JSON not in without.serving
    assert {e["workload"] for e in without.missing} == {REST_JSON, REST_BINARY}
    assert "no http_port=" in without.missing[0]["why"]
    both = _check(
        {
            "foldserve": servers.Server(ours, None, grpc_echo, rest_server[0]),
            "mlserver": servers.Server(peer, None, grpc_echo, json_only[0]),
        },
        tiny_model,
    )
    assert both.serving[REST_JSON] == ["foldserve", "mlserver"] and not both.missing
    assert both.serving[REST_BINARY] == ["foldserve"]
    assert [(e["server"], e["workload"]) for e in both.not_served] == [("mlserver", REST_BINARY)]
    assert PREDICT not in [w for w, names in both.serving.items() if "mlserver" in names]
