"""Triton's model configuration and statistics extensions in the shapes both adapters answer:
gRPC messages, and the JSON Triton's HTTP server writes.

Triton's configuration JSON is protobuf's JSON of the `ModelConfig` message with the proto's
field names and every field printed, and its 64-bit integer lists (dims, reshape shapes,
specific versions) as JSON numbers, not protobuf's strings. Its statistics JSON has every count
and duration as a number.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from foldserve._proto.inference import grpc_predict_v2_pb2 as pb
from foldserve._proto.inference.model_config_pb2 import ModelConfig
from foldserve.core.stats import VersionStats


def config_json(config: ModelConfig) -> dict[str, Any]:
    """A model's configuration as Triton's HTTP `GET .../config` answers it."""
    value = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for tensor in (*value.get("input", ()), *value.get("output", ())):
        tensor["dims"] = [int(d) for d in tensor.get("dims", ())]
        if "reshape" in tensor:
            tensor["reshape"]["shape"] = [int(d) for d in tensor["reshape"].get("shape", ())]
    specific = value.get("version_policy", {}).get("specific")
    if specific is not None:
        specific["versions"] = [int(v) for v in specific.get("versions", ())]
    return value


def statistics_message(stats: list[VersionStats]) -> pb.ModelStatisticsResponse:
    """The statistics as gRPC's `ModelStatisticsResponse`."""
    return pb.ModelStatisticsResponse(
        model_stats=[
            pb.ModelStatistics(
                name=s.name,
                version=s.version,
                last_inference=s.last_inference,
                inference_count=s.inference_count,
                execution_count=s.execution_count,
                inference_stats=pb.InferStatistics(
                    **{
                        k: pb.StatisticDuration(count=c, ns=ns)
                        for k, (c, ns) in s.durations.items()
                    }
                ),
            )
            for s in stats
        ]
    )


def statistics_json(stats: list[VersionStats]) -> dict[str, Any]:
    """The statistics as Triton's HTTP `GET .../stats` answers them."""
    return {
        "model_stats": [
            {
                "name": s.name,
                "version": s.version,
                "last_inference": s.last_inference,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": _durations(s, dict),
            }
            for s in stats
        ]
    }


def _durations(stats: VersionStats, make: Any) -> dict[str, Any]:
    return {k: make(count=c, ns=ns) for k, (c, ns) in stats.durations.items()}
