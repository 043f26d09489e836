"""The load every fault runs under: a fixed number of V2 ModelInfer calls in flight, over gRPC
(several channels, each its own TCP connection) or V2 REST (a keep-alive connection per call in
flight), until told to stop.

Every call is recorded with when it started and ended, its status (REST statuses by gRPC's names,
`CONNECTION` for a connection that broke before its answer) and the connection it went on, so a
fault's row can say which calls failed, whether they were in flight when the fault struck, and
how the latency of the others moved.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.bench.chaos.procs import connections_of, socket_inodes
from foldserve.bench.http_client import CODES, HttpConnection
from foldserve.bench.spread_load import rest_twin

CALL_TIMEOUT_SECONDS = 30.0
# Channels of their own (grpcio would otherwise share one connection among equal channels).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class Call:
    """One finished call: its start and end (monotonic seconds), status and connection."""

    start: float
    end: float
    status: str
    connection: int


@dataclass
class Load:
    """`in_flight` calls of `request` to `target` over `protocol` ("grpc" or "http"), spread over
    `connections` connections (REST: one per call in flight)."""

    target: str
    request: v2.ModelInferRequest
    protocol: str = "grpc"
    in_flight: int = 64
    connections: int = 8
    calls: list[Call] = field(default_factory=list)
    # Per connection: its client-side port once known, and its calls in flight now.
    ports: dict[int, int] = field(default_factory=dict)
    busy: Counter = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Load until `stop`; every connection is open (and its port known) before the calls
        start."""
        if self.protocol == "grpc":
            await self._run_grpc()
        else:
            await self._run_http()

    async def _loop(self, connection: int, call) -> None:
        while not self._stop.is_set():
            self.busy[connection] += 1
            start = time.monotonic()
            status = await call()
            self.busy[connection] -= 1
            self.calls.append(Call(start, time.monotonic(), status, connection))

    async def _run_grpc(self) -> None:
        channels = [
            grpc.aio.insecure_channel(self.target, options=OWN_CONNECTION)
            for _ in range(self.connections)
        ]
        try:
            stubs = [v2_grpc.GRPCInferenceServiceStub(c) for c in channels]
            for index, stub in enumerate(stubs):  # one at a time: a new socket is this one's
                known = set(client_ports(self.target))
                await stub.ModelInfer(
                    self.request, timeout=CALL_TIMEOUT_SECONDS, wait_for_ready=True
                )
                new = set(client_ports(self.target)) - known
                self.ports[index] = new.pop() if len(new) == 1 else 0

            def caller(stub):
                async def call() -> str:
                    try:
                        await stub.ModelInfer(self.request, timeout=CALL_TIMEOUT_SECONDS)
                        return "OK"
                    except grpc.aio.AioRpcError as exc:
                        return exc.code().name

                return call

            per = self.in_flight // self.connections
            await asyncio.gather(
                *(
                    self._loop(i, caller(stubs[i]))
                    for i in range(self.connections)
                    for _ in range(per)
                )
            )
        finally:
            for channel in channels:
                await channel.close()

    async def _run_http(self) -> None:
        host, port = self.target.rsplit(":", 1)
        path, body, headers = rest_twin(self.request)
        connections = [HttpConnection(host, int(port)) for _ in range(self.in_flight)]

        def caller(index: int):
            connection = connections[index]

            async def call() -> str:
                try:
                    status, _ = await connection.request("POST", path, body, headers)
                except OSError:
                    return "CONNECTION"
                self.ports[index] = local_port(connection)
                return CODES.get(status, f"HTTP {status}")

            return call

        for index in range(self.in_flight):
            await caller(index)()
        try:
            await asyncio.gather(*(self._loop(i, caller(i)) for i in range(self.in_flight)))
        finally:
            for connection in connections:
                await connection.close()


def local_port(connection: HttpConnection) -> int:
    """The client-side port of an open HttpConnection (0: not open)."""
    streams = connection._streams
    if streams is None:
        return 0
    return streams[1].get_extra_info("sockname")[1]


def client_ports(target: str) -> list[int]:
    """Client-side ports of this process's established TCP connections to `target`."""
    port = int(target.rsplit(":", 1)[1])
    mine = socket_inodes(os.getpid())
    return [local for local, remote, inode in connections_of() if remote == port and inode in mine]


def statuses(calls: list[Call]) -> Counter:
    return Counter(call.status for call in calls)


def p99_ms(calls: list[Call]) -> float:
    """p99 latency (ms) of the calls answered OK."""
    latencies = [c.end - c.start for c in calls if c.status == "OK"]
    return float(np.percentile(latencies, 99) * 1e3) if latencies else float("nan")
