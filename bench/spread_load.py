"""Load spread over many models: V2 `ModelInfer` over gRPC, or V2 REST infer (Triton's binary
tensors), from one asyncio client process, round-robin over the models given.

Why not h2load, as `foldserve bench` uses: h2load sends one request body to every URL, and the
V2 gRPC request names its model in the body, so it cannot spread calls over models of different
inputs. Requests are serialized once up front, so the client's work per call is the transport's
own; its CPU is measured (`client_cpu_us_per_call`) so a client-bound figure shows as one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.bench.http_client import CODES, HttpConnection

GRPC, REST = "grpc", "rest"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CALL_TIMEOUT_SECONDS = 30.0
# Separate channels must not share one pooled connection: with --workers N the kernel balances
# per connection, so each channel needs its own.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class PreparedCall:
    """One model's request, ready to send over either protocol."""

    model: str
    grpc_body: bytes
    rest_path: str
    rest_body: bytes
    rest_headers: dict[str, str]


def infer_request(model: str, input_name: str, values: np.ndarray) -> v2.ModelInferRequest:
    """A V2 ModelInferRequest of one FP32 input, its contents raw (as Triton's clients send)."""
    tensor = v2.ModelInferRequest.InferInputTensor(
        name=input_name, datatype="FP32", shape=list(values.shape)
    )
    return v2.ModelInferRequest(
        model_name=model, inputs=[tensor], raw_input_contents=[values.astype("<f4").tobytes()]
    )


def rest_twin(request: v2.ModelInferRequest) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of the V2 REST call equal to a raw gRPC `request`: Triton's binary
    tensor extension, every output asked for as bytes."""
    tensor = request.inputs[0]
    raw = request.raw_input_contents[0]
    header = json.dumps({
        "inputs": [{"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()  # fmt: skip
    headers = {"inference-header-content-length": str(len(header)),
               "content-type": "application/octet-stream"}  # fmt: skip
    return f"/v2/models/{request.model_name}/infer", header + raw, headers


def prepare(model: str, input_name: str, values: np.ndarray) -> PreparedCall:
    """`model`'s call with `values` for its input, over either protocol."""
    request = infer_request(model, input_name, values)
    path, body, headers = rest_twin(request)
    return PreparedCall(model, request.SerializeToString(), path, body, headers)


@dataclass
class LoadResult:
    """What one timed run saw: every call's status and latency, per model."""

    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)  # OK answers, by model
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None  # with `server_cpu` given to `run_load`

    @property
    def calls(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.calls - self.statuses["OK"]

    def figures(self) -> dict[str, float]:
        p50, p99 = np.percentile(self.latencies_s, [50, 99]) * 1e3 if self.calls else (0, 0)
        return {
            "calls_per_s": self.calls / self.seconds if self.seconds else 0.0,
            "p50_ms": float(p50),
            "p99_ms": float(p99),
            "client_cpu_us_per_call": _per_call(self.client_cpu_s, self.calls),
            "server_cpu_us_per_call": _per_call(self.server_cpu_s, self.calls),
        }


def _per_call(seconds: float | None, calls: int) -> float:
    return seconds / calls * 1e6 if calls and seconds is not None else float("nan")


class SpreadLoad:
    """`in_flight` callers over `connections` connections to `host:port`, each call to the next
    model in turn; an async context that opens the connections once for every run."""

    def __init__(
        self, host: str, port: int, protocol: str, in_flight: int, connections: int = 4
    ) -> None:
        self.host, self.port, self.protocol = host, port, protocol
        self.in_flight, self.connections = in_flight, min(connections, in_flight)
        self._senders: list = []

    async def __aenter__(self) -> SpreadLoad:
        if self.protocol == GRPC:
            self._senders = [self._grpc_sender() for _ in range(self.connections)]
        else:  # HTTP/1.1 carries one call at a time: a connection per caller
            self._senders = [self._rest_sender() for _ in range(self.in_flight)]
        return self

    async def __aexit__(self, *exc_info) -> None:
        for send in self._senders:
            await send.close()

    async def run(self, calls: Sequence[PreparedCall], seconds: float) -> LoadResult:
        """Keep `in_flight` calls going for `seconds`; the calls in flight then finish."""
        result = LoadResult()
        turns = itertools.cycle(calls)
        senders = self._senders
        cpu, start = time.process_time(), time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(
            *(self._caller(senders[i % len(senders)], turns, deadline, result)
              for i in range(self.in_flight))
        )  # fmt: skip
        result.seconds = time.perf_counter() - start
        result.client_cpu_s = time.process_time() - cpu
        return result

    async def _caller(self, send, turns, deadline: float, result: LoadResult) -> None:
        while time.perf_counter() < deadline:
            call = next(turns)
            began = time.perf_counter()
            status = await send(call)
            result.latencies_s.append(time.perf_counter() - began)
            result.statuses[status] += 1
            if status == "OK":
                result.answered[call.model] += 1

    def _grpc_sender(self):
        target = f"{self.host}:{self.port}"
        channel = grpc.aio.insecure_channel(target, options=_OWN_CONNECTION)
        infer = channel.unary_unary(MODEL_INFER)  # bytes in, bytes out: no client-side protobuf

        async def send(call: PreparedCall) -> str:
            try:
                reply = await infer(call.grpc_body, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return "OK" if reply else "EMPTY"

        send.close = channel.close
        return send

    def _rest_sender(self):
        connection = HttpConnection(self.host, self.port)

        async def send(call: PreparedCall) -> str:
            try:
                status, _ = await connection.request(
                    "POST", call.rest_path, call.rest_body, call.rest_headers
                )
            except OSError:
                return "CONNECTION"
            return CODES.get(status, f"HTTP {status}")

        send.close = connection.close
        return send


def run_load(
    host: str,
    port: int,
    protocol: str,
    calls: Sequence[PreparedCall],
    in_flight: int,
    seconds: float,
    warmup_seconds: float = 0.0,
    server_cpu: Callable[[], float] | None = None,
) -> LoadResult:
    """A warm-up (not counted), then `seconds` of load; see `SpreadLoad`. `server_cpu`, the
    server's CPU seconds so far, is read before and after the timed part."""

    async def both() -> LoadResult:
        async with SpreadLoad(host, port, protocol, in_flight) as load:
            if warmup_seconds:
                await load.run(calls, warmup_seconds)
            before = server_cpu() if server_cpu else None
            result = await load.run(calls, seconds)
            if server_cpu:
                result.server_cpu_s = server_cpu() - before
            return result

    return asyncio.run(both())
