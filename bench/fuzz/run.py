"""`foldserve fuzz`: send seeded odd requests to a server, and say whether every answer keeps the
contract: the right refusal for what cannot be valid, OK for what is, never INTERNAL or UNKNOWN,
no hang, and good calls that keep answering what they answered at the start."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field

import grpc

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from foldserve.bench.fuzz.generate import INFER, PREDICT, Requests
from foldserve.bench.fuzz.oracle import REFUSALS, Served, is_valid
from foldserve.client.channel import ChannelError, open_channel

PROBE_EVERY = 50


@dataclass
class Report:
    """What a fuzz run saw."""

    calls: int = 0
    valid: int = 0
    statuses: Counter = field(default_factory=Counter)
    breaks: list[str] = field(default_factory=list)
    hangs: int = 0
    probes: int = 0
    probe_failures: int = 0

    @property
    def ok(self) -> bool:
        return not self.breaks and not self.hangs and not self.probe_failures

    def lines(self) -> list[str]:
        statuses = ", ".join(f"{code} {n}" for code, n in self.statuses.most_common())
        return [
            f"calls: {self.calls} (valid {self.valid}, invalid {self.calls - self.valid})",
            f"statuses: {statuses}",
            f"contract breaks: {len(self.breaks)}; hangs: {self.hangs}",
            f"good calls re-checked: {self.probes}, wrong answers: {self.probe_failures}",
            *(f"  break: {b}" for b in self.breaks[:20]),
        ]


def describe(channel: grpc.Channel, max_message_bytes: int) -> Served:
    """What the oracle needs to know of the served model, asked of the server."""
    description = pb_grpc.PredictorStub(channel).DescribeModel(
        pb.DescribeModelRequest(), timeout=10
    )
    v2_stub = v2_grpc.GRPCInferenceServiceStub(channel)
    metadata = v2_stub.ModelMetadata(v2.ModelMetadataRequest(name=description.name), timeout=10)
    server = v2_stub.ServerMetadata(v2.ServerMetadataRequest(), timeout=10)
    return Served(
        name=description.name,
        versions=tuple(metadata.versions),
        input_name=description.input_name,
        input_shape=tuple(description.input_shape),
        classes=len(description.class_labels),
        output_names=tuple(description.output_names),
        max_message_bytes=max_message_bytes,
        shared_memory="system_shared_memory" in server.extensions,
    )


def _status(channel: grpc.Channel, method: str, data: bytes, timeout: float) -> tuple[str, bytes]:
    try:
        return "OK", channel.unary_unary(method)(data, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code().name, b""


def verdict(status: str, valid: bool) -> str | None:
    """Why an answer breaks the contract, or None."""
    if status in ("INTERNAL", "UNKNOWN"):
        return f"{status} for a request the caller sent"
    if valid and status != "OK":
        return f"{status} for a valid request"
    if not valid and status == "OK":
        return "OK for a request that cannot be valid"
    if not valid and status not in REFUSALS:
        return f"{status} is no refusal for a bad request"
    return None


class Fuzzer:
    """Runs the calls and fills a report."""

    def __init__(self, channel: grpc.Channel, served: Served, seed: int, timeout: float) -> None:
        self.channel, self.timeout = channel, timeout
        self.requests = Requests(served, seed)
        self.served = served
        self.report = Report()
        self._probes = [
            (method, self.requests.good(method).SerializeToString()) for method in (PREDICT, INFER)
        ]
        self._answers = [_status(channel, m, d, timeout) for m, d in self._probes]

    def run(self, calls: int) -> Report:
        for index in range(calls):
            self.call(*self.requests.draw())
            if index % PROBE_EVERY == PROBE_EVERY - 1:
                self.probe()
        return self.report

    def call(self, method: str, data: bytes) -> None:
        report = self.report
        valid = is_valid(method, data, self.served)
        status, _ = _status(self.channel, method, data, self.timeout)
        report.calls += 1
        report.valid += valid
        report.statuses[status] += 1
        if status == "DEADLINE_EXCEEDED":
            report.hangs += 1
        elif (why := verdict(status, valid)) is not None:
            report.breaks.append(
                f"{method} {data[:48].hex()}{'…' if len(data) > 48 else ''}: {why}"
            )

    def probe(self) -> None:
        for (method, data), expected in zip(self._probes, self._answers, strict=True):
            self.report.probes += 1
            if _status(self.channel, method, data, self.timeout) != expected:
                self.report.probe_failures += 1


def run_fuzz(args: argparse.Namespace) -> int:
    """Run `foldserve fuzz`; 0 when every answer kept the contract, 1 otherwise."""
    try:
        channel = open_channel(args)
    except ChannelError as exc:
        print(f"foldserve fuzz: {exc}")
        return 1
    with channel:
        try:
            served = describe(channel, args.max_message_bytes)
        except grpc.RpcError as exc:
            print(f"foldserve fuzz: {args.target}: {exc.code().name}: {exc.details()}")
            return 1
        report = Fuzzer(channel, served, args.seed, args.timeout).run(args.calls)
    print(f"seed {args.seed}, target {args.target}")
    print("\n".join(report.lines()))
    return 0 if report.ok else 1
