"""`--workers N` with shared memory on: each worker keeps its own regions (what
docs/guides/shared-memory.md tells clients), and the server says so as it starts."""

from __future__ import annotations

from multiprocessing import shared_memory
from pathlib import Path

from foldserve._proto.inference import grpc_predict_v2_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.service.subprocess_server import server_process
from tests.service.test_workers import connection


def test_each_worker_keeps_its_own_regions(tmp_path: Path, tiny_model_path: Path) -> None:
    region = shared_memory.SharedMemory(create=True, size=64)
    args = ["--workers", "2", "--shared-memory", "on"]
    try:
        with server_process(tiny_model_path, tmp_path, args) as server:
            register = pb.SystemSharedMemoryRegisterRequest(
                name="r", key=f"/{region.name}", byte_size=64
            )
            with connection(server.target) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                stub.SystemSharedMemoryRegister(register, timeout=10)
                # The same connection reaches the same worker.
                status = stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
                assert list(status.regions) == ["r"]
            seen = set()
            for _ in range(16):  # new connections reach either worker
                with connection(server.target) as channel:
                    stub = pb_grpc.GRPCInferenceServiceStub(channel)
                    status = stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
                    seen.add(tuple(status.regions))
            assert server.terminate() == 0, server.stderr()
        assert seen == {("r",), ()}, seen
        assert "each of the 2 workers keeps its own regions" in server.stderr()
    finally:
        region.close()
        region.unlink()
