"""A flood far over the in-flight bound: every call is answered or refused RESOURCE_EXHAUSTED at
once, every refusal is counted, and the server's memory stays bounded."""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from tests.service.subprocess_server import server_process

ROUNDS, CONCURRENT = 12, 300


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
        / 1024
    )


def request() -> v2.ModelInferRequest:
    batch = np.zeros((1, 64), np.float32)
    tensor = v2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 64])
    return v2.ModelInferRequest(
        model_name="foldserve", inputs=[tensor], raw_input_contents=[batch.tobytes()]
    )


async def flood(target: str, pid: int) -> tuple[Counter, list[float]]:
    codes: Counter = Counter()
    memory = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        message = request()

        async def one() -> None:
            try:
                await stub.ModelInfer(message, timeout=30)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1

        for _ in range(ROUNDS):
            await asyncio.gather(*(one() for _ in range(CONCURRENT)))
            memory.append(rss_mb(pid))
    return codes, memory


def test_a_flood_is_answered_refused_and_counted_in_bounded_memory(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    with server_process(tiny_model_path, tmp_path, ["--max-concurrent-rpcs", "4"]) as server:
        codes, memory = asyncio.run(flood(server.target, server.process.pid))
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert server.terminate() == 0
    assert sum(codes.values()) == ROUNDS * CONCURRENT
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes["OK"] > 0 and codes["RESOURCE_EXHAUSTED"] > 0, codes
    counted = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "foldserve_requests_total"
                and sample.labels["method"] == "ModelInfer"
            ):
                counted[sample.labels["code"]] += sample.value
    assert {k: v for k, v in counted.items() if v} == dict(codes)
    growth = memory[-1] - memory[1]
    assert growth < 20, f"RSS grew {growth:.1f} MB after warm-up: {memory}"
