"""Load one model file, check everything about it up front, and run it in onnxruntime.

Every check of a file happens here, at load time, so a model that loads can be served: the
metadata against the contract (`service.contract`), the graph against the metadata, one real run,
the input BatchNorm's statistics against the input shape, and the shift monitor's taps and
calibration against the graph and the BN statistics.

A file with taps is run as two sessions: predictions without the monitor use a copy of the graph
without the tap nodes (`onnx_prune`: onnxruntime would run them on every call otherwise), and the
full graph runs only for a monitor that fetches the taps.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from service import contract
from service.contract import TAP_PREFIX, TAPS, ContractError, ModelMetadata
from service.core.monitor import build_statistic
from service.core.onnx_opset import default_opset
from service.core.onnx_prune import without_outputs
from service.defaults import MODEL_NAME
from service.runtime import ort


class ModelError(Exception):
    """A model file that cannot be served; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: its name, numpy dtype and one example's shape."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @cached_property
    def size(self) -> int:
        """Values in one example."""
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Model:
    """A loaded, checked model: what its file says and a ready onnxruntime session."""

    name: str
    version: str
    path: str
    sha256: str
    opset: int
    metadata: ModelMetadata
    session: ort.InferenceSession = field(repr=False, compare=False)
    # The full graph, with the taps: only for a model whose shift monitor is on.
    tapped_session: ort.InferenceSession | None = field(default=None, repr=False, compare=False)

    @cached_property
    def input(self) -> TensorSpec:
        return TensorSpec(self.metadata.input_name, np.dtype(np.float32), self.metadata.input_shape)

    @cached_property
    def outputs(self) -> tuple[TensorSpec, ...]:
        classes = (len(self.class_labels),)
        return tuple(TensorSpec(n, np.dtype(np.float32), classes) for n in self.output_names)

    @property
    def class_labels(self) -> tuple[str, ...]:
        return self.metadata.class_labels

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.metadata.output_names

    def run(self, batch: np.ndarray, taps: bool = False) -> dict[str, np.ndarray]:
        """Run the model on a float32 batch of shape [N, *input shape].

        Args:
            taps: also return the `taps` output ([N, width]); only for a model loaded with its
                monitor on (`tapped_session`).

        Returns:
            Every output by name, each float32 of shape [N, classes] (and `taps`).
        """
        names = self.output_names
        if taps:
            wanted = (*names, TAPS)
            values = self.tapped_session.run(wanted, {self.input.name: batch})  # type: ignore[union-attr]
            return dict(zip(wanted, values, strict=True))
        return dict(zip(names, self.session.run(names, {self.input.name: batch}), strict=True))


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


def load_model(
    path: str | os.PathLike[str],
    name: str = MODEL_NAME,
    version: str | None = None,
    *,
    monitor: bool = True,
) -> Model:
    """Read, check and load a model file.

    Args:
        path: the model.onnx file.
        name: the name the model is served under.
        version: the version it is served as (a model repository's version directory); None
            for the version its metadata records.
        monitor: load the tapped graph for a shift monitor, when the file has taps and a
            calibration.

    Raises:
        ModelError: missing or unreadable file, not ONNX, no or bad foldserve metadata, a graph
            that does not match its metadata, or input BN statistics that do not fit the input.
    """
    where = f"model file {str(path)!r}"
    data = _read(Path(path), where)
    session = _session(data, where)
    try:
        metadata = contract.from_properties(session.get_modelmeta().custom_metadata_map)
    except ContractError as exc:
        raise ModelError(f"{where}: {exc}") from None
    tapped = None
    if metadata.taps:
        if monitor and metadata.shift_calibration is not None:
            tapped = session
        pruned = without_outputs(data, lambda n: n == TAPS or n.startswith(TAP_PREFIX))
        session = _session(pruned, where)
    model = Model(
        name=name,
        version=metadata.model_version if version is None else version,
        path=str(Path(path).resolve()),
        sha256=hashlib.sha256(data).hexdigest(),
        opset=default_opset(data),
        metadata=metadata,
        session=session,
        tapped_session=tapped,
    )
    _check_graph(where, model)
    _check_input_bn(where, model)
    _check_taps(where, model)
    return model


def _session(data: bytes, where: str) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(data, _session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{where} is not a loadable ONNX model: {first_line}") from None


def _read(file: Path, where: str) -> bytes:
    if not file.is_file():
        raise ModelError(f"{where} does not exist or is not a file")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ModelError(f"{where} cannot be read: {exc}") from None


def _check_graph(where: str, model: Model) -> None:
    spec = model.input
    inputs = {i.name: i for i in model.session.get_inputs()}
    if spec.name not in inputs:
        raise ModelError(
            f"{where}: the graph has no input {spec.name!r} ({contract.KEYS['input_name']}); "
            f"its inputs are {sorted(inputs)}"
        )
    if inputs[spec.name].type != "tensor(float)":
        raise ModelError(
            f"{where}: input {spec.name!r} is {inputs[spec.name].type}, expected tensor(float)"
        )
    graph_outputs = {o.name for o in model.session.get_outputs()}
    wanted = set(model.output_names) | set(contract.OUTPUT_NAMES)
    if not wanted <= graph_outputs:
        raise ModelError(
            f"{where}: the graph must have outputs {sorted(wanted)}, has {sorted(graph_outputs)}"
        )
    # One real run proves the declared shape fits the graph and the classes match the outputs.
    try:
        outputs = model.run(np.zeros((1, *spec.shape), dtype=np.float32))
    except Exception as exc:
        raise ModelError(
            f"{where}: running one example of shape {list(spec.shape)} failed: {exc}"
        ) from None
    expected = (1, len(model.class_labels))
    shapes = {name: list(value.shape) for name, value in outputs.items()}
    if any(value.shape != expected for value in outputs.values()):
        raise ModelError(
            f"{where}: outputs have shapes {shapes} for one example, expected {list(expected)} "
            f"({len(model.class_labels)} class labels)"
        )


def _check_input_bn(where: str, model: Model) -> None:
    """The input BN's statistics are per channel: one example's first axis holds the channels
    (features for a vector, colour channels for an image)."""
    stats = model.metadata.input_bn
    if stats is None:
        return
    index = model.metadata.bn_stats.index(stats)
    shape = model.input.shape
    if shape[0] != stats.num_features:
        raise ModelError(
            f"{where}: {contract.KEYS['bn_stats']}[{index}] (layer {stats.layer!r}, over the "
            f"model input) has {stats.num_features} channels, but one example has shape "
            f"{list(shape)} (channels first)"
        )


def _check_taps(where: str, model: Model) -> None:
    """The monitor's statistic fits the metadata, and the graph's `taps` output fits it."""
    if model.tapped_session is None:
        return
    try:
        width = build_statistic(model.metadata).width
    except ValueError as exc:
        raise ModelError(f"{where}: {contract.KEYS['shift_calibration']}: {exc}") from None
    try:
        taps = model.run(np.zeros((1, *model.input.shape), dtype=np.float32), taps=True)[TAPS]
    except Exception as exc:
        raise ModelError(f"{where}: running one example with its taps failed: {exc}") from None
    if taps.shape != (1, width):
        raise ModelError(
            f"{where}: output {TAPS!r} has shape {list(taps.shape)} for one example, but "
            f"{contract.KEYS['taps']} describes {width} values"
        )
