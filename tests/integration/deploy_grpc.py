"""Calls to a running foldserve over real gRPC, counted by (method, status code) as sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foldserve._proto.foldserve.v1 import predictor_pb2, predictor_pb2_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as v2_grpc


def digits_examples(count: int) -> np.ndarray:
    """`count` real digits examples (64 float32 features each), from scikit-learn's copy."""
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().data[:count], dtype=np.float32)


def serving(target: str, timeout: float = 2.0) -> bool:
    """True when grpc.health.v1 on `target` answers SERVING."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


class Caller:
    """Sends Predict and ModelInfer calls on one channel and counts what it sent.

    `sent[(method, code)]` is the number of calls that ended with gRPC status `code` (a name such
    as OK or INVALID_ARGUMENT), and `predicted` the classes of the successful ones.
    """

    def __init__(self, target: str, model_name: str = "", timeout: float = 10.0):
        self.channel = grpc.insecure_channel(target)
        self.predictor = predictor_pb2_grpc.PredictorStub(self.channel)
        self.inference = v2_grpc.GRPCInferenceServiceStub(self.channel)
        self.model_name = model_name
        self.timeout = timeout
        self.sent: Counter[tuple[str, str]] = Counter()
        self.predicted: Counter[str] = Counter()

    def close(self) -> None:
        self.channel.close()

    def predict(self, features: Sequence[float]) -> predictor_pb2.PredictResponse | None:
        """One Predict call; returns the response, or None when the call failed."""
        try:
            reply = self.predictor.Predict(
                predictor_pb2.PredictRequest(features=list(features), request_id="deploy-test"),
                timeout=self.timeout,
            )
        except grpc.RpcError as exc:
            self.sent["Predict", exc.code().name] += 1
            return None
        self.sent["Predict", "OK"] += 1
        self.predicted[reply.class_name] += 1
        return reply

    def model_infer(self, features: Sequence[float], input_name: str = "input") -> bool:
        """One KServe V2 ModelInfer call with a batch of one example; True when it succeeded."""
        request = v2.ModelInferRequest(
            model_name=self.model_name,
            inputs=[
                v2.ModelInferRequest.InferInputTensor(
                    name=input_name,
                    datatype="FP32",
                    shape=[1, len(features)],
                    contents=v2.InferTensorContents(fp32_contents=list(features)),
                )
            ],
        )
        try:
            reply = self.inference.ModelInfer(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            self.sent["ModelInfer", exc.code().name] += 1
            return False
        self.sent["ModelInfer", "OK"] += 1
        assert reply.outputs, "ModelInfer answered without outputs"
        return True
