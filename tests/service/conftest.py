"""Fixtures for the service tests: tiny model files and in-process servers on 127.0.0.1:0."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from prometheus_client import CollectorRegistry

from foldserve.core.loading import load_model
from foldserve.core.model import Model
from foldserve.server.app import RunningServer, start_server
from foldserve.server.config import ServeConfig
from tests.service.model_files import DEFAULT_SPLIT, linear_model, metadata, write_tiny_model


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 64-feature, 10-class linear model with full foldserve metadata."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model.onnx")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path: Path) -> Model:
    return load_model(tiny_model_path)


@dataclass
class Served:
    """A running in-process server, its registry and a channel to it."""

    running: RunningServer
    registry: CollectorRegistry
    channel: grpc.Channel

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def model(self) -> Model:
        """The newest served version's model (of the default model)."""
        return self.running.repository.model().latest.model

    def sample(self, name: str, **labels: str) -> float | None:
        """A metric sample value, with the model's name and version labels filled in."""
        full = {"model": self.model.name, "version": self.model.version, **labels}
        return self.registry.get_sample_value(name, full)

    def refused(self, name: str, **labels: str) -> float | None:
        """A metric sample value of the calls refused before they named a served model (admission,
        the token, an unknown model, bytes that do not parse): model and version ""."""
        return self.registry.get_sample_value(name, {"model": "", "version": "", **labels})


ServeFactory = Callable[..., Served]


@pytest.fixture
def serve() -> Iterator[ServeFactory]:
    """Start servers (fresh registry each) on 127.0.0.1:0; all are stopped at teardown."""
    started: list[Served] = []

    def start(
        model: Model | Path | None = None, metrics_http: bool = False, **settings: object
    ) -> Served:
        """Serve a loaded model's file, or a model file or directory of versions by path; or,
        with no model and `model_repository=DIR`, a repository of models."""
        if model is not None:
            settings["model"] = str(model.path if isinstance(model, Model) else model)
        config = ServeConfig(host="127.0.0.1", port=0, http_port=0, metrics_port=0, **settings)
        registry = CollectorRegistry()
        running = start_server(config, registry, serve_metrics_http=metrics_http)
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        served = Served(running, registry, channel)
        started.append(served)
        return served

    yield start
    for served in started:
        served.channel.close()
        served.running.drain(0)


@pytest.fixture
def served(serve: ServeFactory, tiny_model: Model) -> Served:
    """A fresh server of the tiny model (fresh registry: exact metric counts)."""
    return serve(tiny_model)


@pytest.fixture(scope="module")
def shared_server(tiny_model: Model) -> Iterator[Served]:
    """One tiny-model server for a whole module of tests that do not count metrics."""
    config = ServeConfig(
        model=tiny_model.path, host="127.0.0.1", port=0, http_port=0, metrics_port=0
    )
    registry = CollectorRegistry()
    running = start_server(config, registry, serve_metrics_http=False)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield Served(running, registry, channel)
    channel.close()
    running.drain(0)


def _softmax_regression(x: np.ndarray, y: np.ndarray, classes: int) -> tuple[np.ndarray, ...]:
    """Fit a softmax regression with plain gradient descent (deterministic, ~1 s)."""
    scale = 1.0 / 16.0  # digits pixels are 0..16
    weights = np.zeros((x.shape[1], classes))
    bias = np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(300):
        logits = (x * scale) @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(x)
        weights -= 2.0 * (x * scale).T @ grad
        bias -= 2.0 * grad.sum(axis=0)
    return weights * scale, bias


@pytest.fixture(scope="session")
def digits_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with model.onnx and card.json, trained (numpy) on the digits train split.

    Stands in for the training half's `trained_mlp_dir` so the end-to-end checks run without
    torch; card.json's `test_accuracy` is computed with onnxruntime like the training report's.
    """
    from foldserve.datasets import load_dataset, split_dataset
    from foldserve.runtime import ort

    split = split_dataset(load_dataset("digits"), **DEFAULT_SPLIT)
    weights, bias = _softmax_regression(split.train.features, split.train.labels, 10)
    directory = tmp_path_factory.mktemp("digits")
    labels = split.train.class_labels
    proto = linear_model(weights, bias, None)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": split.test.features})
    accuracy = float(np.mean(logits.argmax(axis=1) == split.test.labels))
    metrics = {"test_accuracy": accuracy, "split": DEFAULT_SPLIT, "epochs": 300}
    meta = metadata((64,), labels, training_metrics=metrics)
    onnx.save(linear_model(weights, bias, meta), directory / "model.onnx")
    (directory / "card.json").write_text(json.dumps({"test_accuracy": accuracy}))
    return directory
