"""Load one model file, check everything about it up front, and run it in onnxruntime.

Every check of a file happens at load time, so a model that loads can be served. A file with
foldserve metadata is checked against it (`model_checks`): the metadata against the contract
(`service.contract`), the graph against the metadata, one real run, the input BatchNorm's
statistics against the input shape, and the shift monitor's taps and calibration against the
graph and the BN statistics. A file without (a model foldserve did not train) is read from its
graph (`foreign`). Either may have a `config.json` beside it (`model_config`).

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
from service.contract import (
    LOGITS,
    PROBABILITIES,
    TAP_PREFIX,
    TAPS,
    BNStats,
    ContractError,
    FoldReport,
    ModelConfig,
    ModelMetadata,
    Tap,
)
from service.core.errors import ModelError, RequestError, failed_precondition
from service.core.foreign import Foreign, read_foreign
from service.core.foreign_shift import input_taps
from service.core.graph_spec import softmax
from service.core.model_checks import check_foldserve_model
from service.core.model_config import config_for
from service.core.onnx_opset import default_opset
from service.core.onnx_prune import without_outputs
from service.defaults import MODEL_NAME
from service.runtime import ort

__all__ = ["Model", "ModelError", "TensorSpec", "load_model"]


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
    """A loaded, checked model: what its file says and a ready onnxruntime session.

    `metadata` is the file's foldserve metadata; None for a model foldserve did not train,
    whose graph `foreign` describes instead.
    """

    name: str
    version: str
    path: str
    sha256: str
    opset: int
    metadata: ModelMetadata | None
    session: ort.InferenceSession = field(repr=False, compare=False)
    # The full graph, with the taps: only for a model whose shift monitor is on.
    tapped_session: ort.InferenceSession | None = field(default=None, repr=False, compare=False)
    foreign: Foreign | None = None

    @cached_property
    def input(self) -> TensorSpec:
        """The input `Predict` fills, one example's shape.

        Raises:
            RequestError: FAILED_PRECONDITION for a model that is not classifier-shaped.
        """
        if self.foreign is None:
            meta = self.metadata
            return TensorSpec(meta.input_name, np.dtype(np.float32), meta.input_shape)  # type: ignore[union-attr]
        classifier = self.foreign.classifier
        if classifier is None:
            raise self._not_classifier()
        return TensorSpec(classifier.input.name, classifier.input.dtype, classifier.input_shape)

    def _not_classifier(self) -> RequestError:
        reason = self.foreign.reason  # type: ignore[union-attr]
        return failed_precondition(
            f"model {self.name!r} is not classifier-shaped ({reason}); use the V2 ModelInfer API"
        )

    @cached_property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """A foldserve model's outputs, one example's shape (a foreign model: `foreign.graph`)."""
        classes = (len(self.class_labels),)
        return tuple(TensorSpec(n, np.dtype(np.float32), classes) for n in self.output_names)

    @property
    def class_labels(self) -> tuple[str, ...]:
        if self.foreign is not None:
            return self.foreign.class_labels
        return self.metadata.class_labels  # type: ignore[union-attr]

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.foreign is not None:
            return self.foreign.graph.output_names
        return self.metadata.output_names  # type: ignore[union-attr]

    @property
    def bn_stats(self) -> tuple[BNStats, ...]:
        return self.foreign.bn_stats if self.foreign else self.metadata.bn_stats  # type: ignore[union-attr]

    @property
    def fold_report(self) -> FoldReport:
        return self.foreign.fold_report if self.foreign else self.metadata.fold_report  # type: ignore[union-attr]

    @property
    def taps(self) -> tuple[Tap, ...]:
        """The shift monitor's taps (a foreign model: the input BN's, computed by the server)."""
        if self.foreign is not None:
            return (self.foreign.shift[0],) if self.foreign.shift else ()
        return self.metadata.taps  # type: ignore[union-attr]

    @property
    def foldserve_version(self) -> str:
        """The foldserve that wrote (or, for a foreign file, folded) it; "" for none."""
        if self.foreign is not None:
            return self.foreign.foldserve_version
        return self.metadata.foldserve_version  # type: ignore[union-attr]

    def run(self, batch: np.ndarray, taps: bool = False) -> dict[str, np.ndarray]:
        """Run the model as a classifier on a batch of shape [N, *input shape].

        Args:
            taps: also return the `taps` output ([N, width]); only for a model loaded with its
                monitor on (`tapped_session`).

        Returns:
            Every output by name, each float32 of shape [N, classes] (and `taps`); for a
            classifier-shaped foreign model, its logits and probabilities under the contract's
            names `logits` and `probabilities`.
        """
        if self.foreign is not None:
            return self._run_classifier(batch, taps)
        names = self.output_names
        if taps:
            wanted = (*names, TAPS)
            values = self.tapped_session.run(wanted, {self.input.name: batch})  # type: ignore[union-attr]
            return dict(zip(wanted, values, strict=True))
        return dict(zip(names, self.session.run(names, {self.input.name: batch}), strict=True))

    def _run_classifier(self, batch: np.ndarray, taps: bool) -> dict[str, np.ndarray]:
        classifier = self.foreign.classifier  # type: ignore[union-attr]
        if classifier is None:
            raise self._not_classifier()
        probabilities = classifier.probabilities
        names = [classifier.logits]
        if probabilities is not None and probabilities != classifier.logits:
            names.append(probabilities)
        values = dict(
            zip(names, self.session.run(names, {classifier.input.name: batch}), strict=True)
        )
        logits = values[classifier.logits]
        found = values[probabilities] if probabilities is not None else softmax(logits.copy())
        if taps:  # the input BN's tap, computed here (`foreign_shift`)
            return {LOGITS: logits, PROBABILITIES: found, TAPS: input_taps(batch)}
        return {LOGITS: logits, PROBABILITIES: found}

    def run_graph(self, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        """Run the graph on inputs by name; the named outputs by name."""
        return dict(zip(names, self.session.run(names, feeds), strict=True))


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
    name: str | None = None,
    version: str | None = None,
    *,
    monitor: bool = True,
) -> Model:
    """Read, check and load a model file, and the `config.json` beside it (`model_config`).

    Args:
        path: the model.onnx file.
        name: the name the model is served under; None: the config's name, or MODEL_NAME.
        version: the version it is served as (a model repository's version directory); None
            for a single file: the config's version, else the one its metadata records ("1" for
            a file without foldserve metadata).
        monitor: load the tapped graph for a shift monitor, when the file has taps and a
            calibration.

    Raises:
        ModelError: missing or unreadable file, not ONNX, bad foldserve metadata, a graph that
            does not match its metadata (or, without metadata, that cannot be served), input BN
            statistics that do not fit the input, or a bad config file.
    """
    where = f"model file {str(path)!r}"
    file = Path(path)
    data = _read(file, where)
    config = config_for(file, in_repository=version is not None)
    session = _session(data, where)
    properties = session.get_modelmeta().custom_metadata_map
    common = {
        "name": name or config.name or MODEL_NAME,
        "path": str(file.resolve()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "opset": default_opset(data),
    }
    if not contract.has_metadata(properties):
        foreign = read_foreign(session, properties, config, where)
        served = version or config.version or FOREIGN_VERSION
        return Model(**common, version=served, metadata=None, session=session, foreign=foreign)
    return _foldserve_model(data, session, properties, config, where, common, version, monitor)


FOREIGN_VERSION = "1"  # the version of a single file that names none


def _foldserve_model(
    data: bytes,
    session: ort.InferenceSession,
    properties: dict[str, str],
    config: ModelConfig,
    where: str,
    common: dict,
    version: str | None,
    monitor: bool,
) -> Model:
    try:
        metadata = contract.from_properties(properties)
    except ContractError as exc:
        raise ModelError(f"{where}: {exc}") from None
    tapped = None
    if metadata.taps:
        if monitor and metadata.shift_calibration is not None:
            tapped = session
        pruned = without_outputs(data, lambda n: n == TAPS or n.startswith(TAP_PREFIX))
        session = _session(pruned, where)
    served = version or config.version or metadata.model_version
    model = Model(
        **common, version=served, metadata=metadata, session=session, tapped_session=tapped
    )
    check_foldserve_model(where, model, config)
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
