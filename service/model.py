"""Load one foldserve model file, check it against the README's contract, run onnxruntime."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# onnxruntime's telemetry hangs interpreter exit for ~10 s on machines without a session bus.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np
import onnxruntime as ort

from service.onnx_opset import default_opset

FORMAT_VERSION = "1"
OUTPUTS = ("logits", "probabilities")
REQUIRED_KEYS = (
    "foldserve.format",
    "foldserve.version",
    "foldserve.model_version",
    "foldserve.created",
    "foldserve.dataset",
    "foldserve.arch",
    "foldserve.input_name",
    "foldserve.input_shape",
    "foldserve.input_dtype",
    "foldserve.output_names",
    "foldserve.class_labels",
    "foldserve.bn_stats",
    "foldserve.fold_report",
    "foldserve.training_metrics",
)


class ModelError(Exception):
    """A model file that cannot be served; the message names the file and what is wrong."""


@dataclass
class Model:
    """A loaded, checked model: its metadata and a ready onnxruntime session."""

    name: str
    version: str
    path: str
    sha256: str
    opset: int
    input_name: str
    input_shape: tuple[int, ...]
    class_labels: list[str]
    output_names: list[str]
    training_metrics: dict[str, Any]
    fold_report: dict[str, Any]
    bn_stats: list[dict[str, Any]]
    metadata: dict[str, str]
    session: ort.InferenceSession = field(repr=False)
    # Derived in __post_init__: values in one example, and the shape of a batch of one.
    num_features: int = field(init=False)
    batch_shape: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.num_features = int(np.prod(self.input_shape))
        self.batch_shape = (1, *self.input_shape)

    @property
    def foldserve_version(self) -> str:
        return self.metadata["foldserve.version"]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on a float32 batch of shape [N, *input_shape].

        Returns:
            (logits, probabilities), each float32 of shape [N, classes].
        """
        logits, probabilities = self.session.run(OUTPUTS, {self.input_name: batch})
        return logits, probabilities


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    # One example at a time is ~10 µs of compute: extra threads only add wake-up latency, and the
    # gRPC thread pool already runs calls in parallel.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def load_model(path: str | os.PathLike[str], name: str = "foldserve") -> Model:
    """Read, check and load a model file.

    Args:
        path: the model.onnx file.
        name: the name the model is served under.

    Raises:
        ModelError: missing or unreadable file, not ONNX, no or bad foldserve metadata, or a graph
            that does not match its metadata.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist or is not a file")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelError(f"model file {str(path)!r} cannot be read: {exc}") from None
    try:
        session = ort.InferenceSession(data, _session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model file {str(path)!r} is not a loadable ONNX model: {first_line}"
        ) from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    _check_keys(str(path), metadata)
    model = Model(
        name=name,
        version=metadata["foldserve.model_version"],
        path=str(file.resolve()),
        sha256=hashlib.sha256(data).hexdigest(),
        opset=default_opset(data),
        input_name=metadata["foldserve.input_name"],
        input_shape=tuple(_json(str(path), metadata, "foldserve.input_shape", list)),
        class_labels=[str(c) for c in _json(str(path), metadata, "foldserve.class_labels", list)],
        output_names=list(_json(str(path), metadata, "foldserve.output_names", list)),
        training_metrics=_json(str(path), metadata, "foldserve.training_metrics", dict),
        fold_report=_json(str(path), metadata, "foldserve.fold_report", dict),
        bn_stats=_json(str(path), metadata, "foldserve.bn_stats", list),
        metadata=metadata,
        session=session,
    )
    _check_graph(str(path), model)
    return model


def _check_keys(path: str, metadata: dict[str, str]) -> None:
    if "foldserve.format" not in metadata:
        raise ModelError(
            f"model file {path!r} has no foldserve metadata (key 'foldserve.format' missing); "
            "export it with `foldserve train` or `foldserve export`"
        )
    if metadata["foldserve.format"] != FORMAT_VERSION:
        raise ModelError(
            f"model file {path!r}: metadata format {metadata['foldserve.format']!r} is not "
            f"supported (expected {FORMAT_VERSION!r})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ModelError(f"model file {path!r}: metadata key(s) missing: {', '.join(missing)}")
    if metadata["foldserve.input_dtype"] != "float32":
        raise ModelError(
            f"model file {path!r}: foldserve.input_dtype is "
            f"{metadata['foldserve.input_dtype']!r}; only 'float32' is served"
        )


def _json(path: str, metadata: dict[str, str], key: str, kind: type) -> Any:
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise ModelError(f"model file {path!r}: metadata {key} is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise ModelError(
            f"model file {path!r}: metadata {key} must be a JSON {kind.__name__}, "
            f"got {type(value).__name__}"
        )
    return value


def _check_graph(path: str, model: Model) -> None:
    shape = model.input_shape
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ModelError(
            f"model file {path!r}: foldserve.input_shape must be a list of positive integers, "
            f"got {list(shape)}"
        )
    if not model.class_labels:
        raise ModelError(f"model file {path!r}: foldserve.class_labels is empty")
    inputs = {i.name: i for i in model.session.get_inputs()}
    if model.input_name not in inputs:
        raise ModelError(
            f"model file {path!r}: the graph has no input {model.input_name!r} "
            f"(foldserve.input_name); its inputs are {sorted(inputs)}"
        )
    if inputs[model.input_name].type != "tensor(float)":
        raise ModelError(
            f"model file {path!r}: input {model.input_name!r} is "
            f"{inputs[model.input_name].type}, expected tensor(float)"
        )
    outputs = {o.name for o in model.session.get_outputs()}
    if not set(OUTPUTS) <= outputs:
        raise ModelError(
            f"model file {path!r}: the graph must have outputs {list(OUTPUTS)}, "
            f"has {sorted(outputs)}"
        )
    # One real run proves the declared shape fits the graph and the classes match the outputs.
    try:
        logits, probabilities = model.run(np.zeros((1, *shape), dtype=np.float32))
    except Exception as exc:
        raise ModelError(
            f"model file {path!r}: running one example of shape {list(shape)} failed: {exc}"
        ) from None
    expected = (1, len(model.class_labels))
    if logits.shape != expected or probabilities.shape != expected:
        raise ModelError(
            f"model file {path!r}: outputs have shapes {list(logits.shape)} and "
            f"{list(probabilities.shape)} for one example, expected {list(expected)} "
            f"({len(model.class_labels)} class labels)"
        )
