"""Load one model file, check everything about it up front, and return a `Model`.

One path for every file. The graph gives the inputs and outputs; foldserve's metadata, when the
file has it, adds the class labels, the training record, the BN statistics and the shift
monitor's taps and reference, and is checked against the graph (`model_checks`); a file without
it (a model foldserve did not train) may still record a fold (`foldserve fold`) and be
classifier-shaped (`graph.classifier_of`). Either may have a `config.json` beside it
(`model_config`), and a shift reference (`shift-reference.json`, `core.shift.load`). Every
check happens here, so a model that loads can be served.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from foldserve import contract
from foldserve.contract import (
    LOGITS,
    PROBABILITIES,
    TAP_PREFIX,
    TAPS,
    ContractError,
    FoldReport,
    ModelConfig,
    ModelMetadata,
)
from foldserve.contract.layout import MODEL_NAME
from foldserve.core.errors import ModelError
from foldserve.core.graph import Classifier, TensorSpec, check_run, classifier_of, read_tensors
from foldserve.core.heap import release_freed_memory
from foldserve.core.interface import configure
from foldserve.core.model import Model
from foldserve.core.model_checks import check_against_metadata, check_metadata_graph
from foldserve.core.model_config import config_for
from foldserve.core.onnx_opset import default_opset
from foldserve.core.shift.load import shift_fields
from foldserve.core.shift.prune import without_outputs
from foldserve.core.triton_config import TritonConfig
from foldserve.runtime import ort

FOREIGN_VERSION = "1"  # the version of a single file that names none and has no metadata


def session_options() -> ort.SessionOptions:
    """The onnxruntime options every served model runs with."""
    options = ort.SessionOptions()
    # One example at a time is ~10 µs of compute: extra threads only add wake-up latency, and the
    # server already runs calls in parallel.
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
    triton: TritonConfig | None = None,
) -> Model:
    """Read, check and load a model file, and the `config.json` beside it (`model_config`).

    Args:
        path: the model.onnx file.
        name: the name the model is served under; None: the config's name, or MODEL_NAME.
        version: the version it is served as (a model repository's version directory); None
            for a single file: the config's version, else the one its metadata records ("1" for
            a file without foldserve metadata).
        monitor: load what the shift monitor runs on, when the file allows one.
        triton: the config.pbtxt of the model's directory, applied to the graph (`interface`).

    Raises:
        ModelError: missing or unreadable file, not ONNX, bad foldserve metadata, a graph that
            does not match its metadata (or, without metadata, that cannot be served), input BN
            statistics that do not fit the input, a bad config file (or a config.pbtxt that
            does not fit the graph), or (with `monitor`) a shift reference that cannot be read
            or does not fit the model.
    """
    try:
        return _checked_model(path, name, version, monitor, triton)
    finally:
        # What the load allocated and freed (the file, onnxruntime's parse and optimization)
        # would stay resident in the heap otherwise.
        release_freed_memory()


def _checked_model(
    path: str | os.PathLike[str],
    name: str | None,
    version: str | None,
    monitor: bool,
    triton: TritonConfig | None,
) -> Model:
    where = f"model file {str(path)!r}"
    file = Path(path)
    data = _read(file, where)
    config = config_for(file, in_repository=version is not None)
    full = _session(data, where)
    properties = full.get_modelmeta().custom_metadata_map
    metadata = _metadata(properties, where)
    session = full
    if any(_is_tap(o.name) for o in full.get_outputs()):
        session = _session(without_outputs(data, _is_tap), where)
    inputs, outputs = read_tensors(session, where)
    if metadata is not None:
        check_metadata_graph(where, metadata, inputs, outputs)
    classifier, reason = _classifier(metadata, inputs, outputs)
    bn_stats, report, written_by = _fold_record(metadata, properties, where)
    served = version or config.version or (metadata.model_version if metadata else FOREIGN_VERSION)
    model = Model(
        name=name or config.name or MODEL_NAME,
        version=served,
        path=str(file.resolve()),
        sha256=hashlib.sha256(data).hexdigest(),
        opset=default_opset(data),
        session=session,
        inputs=inputs,
        outputs=outputs,
        classifier=classifier,
        class_labels=_class_labels(metadata, classifier, reason, config, where),
        not_classifier=reason,
        bn_stats=bn_stats,
        fold_report=report,
        foldserve_version=written_by,
        training=metadata,
        adaptation=_adaptation(properties, where),
        **shift_fields(file, properties, metadata, bn_stats, classifier, full, monitor),
    )
    if metadata is not None:
        check_against_metadata(where, model)
    else:
        check_run(session, inputs, where)
    if triton is not None:
        model = configure(model, triton, config.class_labels, where)
    return model


def _is_tap(name: str) -> bool:
    return name == TAPS or name.startswith(TAP_PREFIX)


def _metadata(properties: dict[str, str], where: str) -> ModelMetadata | None:
    if not contract.has_metadata(properties):
        return None
    try:
        return contract.from_properties(properties)
    except ContractError as exc:
        raise ModelError(f"{where}: {exc}") from None


def _adaptation(properties: dict[str, str], where: str) -> contract.Adaptation | None:
    try:
        return contract.read_adaptation(properties)
    except ContractError as exc:
        raise ModelError(f"{where}: {exc}") from None


def _classifier(
    metadata: ModelMetadata | None,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
) -> tuple[Classifier | None, str]:
    """The classifier the metadata declares, or the one the graph's shape makes (or why not)."""
    if metadata is not None:
        spec = next(t for t in inputs if t.name == metadata.input_name)
        classes = len(metadata.class_labels)
        return Classifier(spec, metadata.input_shape, LOGITS, PROBABILITIES, classes), ""
    found = classifier_of(inputs, outputs)
    return (found, "") if isinstance(found, Classifier) else (None, found)


def _class_labels(
    metadata: ModelMetadata | None,
    classifier: Classifier | None,
    reason: str,
    config: ModelConfig,
    where: str,
) -> tuple[str, ...]:
    """The file's labels, else the config's, else "0".."C-1" (none for a non-classifier)."""
    given = config.class_labels
    if metadata is not None:
        if given is not None and given != metadata.class_labels:
            raise ModelError(
                f"{where}: config.json class_labels {list(given)} differ from the file's "
                f"{contract.KEYS['class_labels']} {list(metadata.class_labels)}; leave them out "
                "of config.json, or give the same"
            )
        return metadata.class_labels
    if given is None:
        return tuple(str(i) for i in range(classifier.classes)) if classifier else ()
    if classifier is None:
        raise ModelError(
            f"{where}: config.json class_labels: the model is not classifier-shaped ({reason})"
        )
    if len(given) != classifier.classes:
        raise ModelError(
            f"{where}: config.json class_labels: {len(given)} labels, but output "
            f"{classifier.logits!r} has {classifier.classes} classes"
        )
    return given


def _fold_record(
    metadata: ModelMetadata | None, properties: dict[str, str], where: str
) -> tuple[tuple, FoldReport, str]:
    """(BN statistics, fold report, the foldserve that wrote them) of the file."""
    if metadata is not None:
        return metadata.bn_stats, metadata.fold_report, metadata.foldserve_version
    try:
        fold = contract.read_fold_properties(properties)
    except ContractError as exc:
        raise ModelError(f"{where}: {exc}") from None
    if fold is None:
        return (), FoldReport(), ""
    return fold[0], fold[1], properties.get(contract.KEYS["foldserve_version"], "")


def _session(data: bytes, where: str) -> ort.InferenceSession:
    try:
        session = ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{where} is not a loadable ONNX model: {first_line}") from None
    _forget_model_bytes(session)
    return session


def _forget_model_bytes(session: ort.InferenceSession) -> None:
    """Let go of the bytes the session was built from.

    onnxruntime's Python session keeps them for as long as it lives (`_model_bytes`; their own
    comment calls it bad), only to build the session again when its providers change or a
    non-CPU provider fails. foldserve runs on the CPU provider alone and never changes it, so
    with fallback off nothing reads them again; kept, every served version would hold a second
    copy of its file (a 98 MiB resnet50: +98 MiB resident, benchmarks/repository-scale.md).
    """
    if isinstance(getattr(session, "_model_bytes", None), bytes):
        session.disable_fallback()
        session._model_bytes = None


def _read(file: Path, where: str) -> bytes:
    if not file.is_file():
        raise ModelError(f"{where} does not exist or is not a file")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ModelError(f"{where} cannot be read: {exc}") from None
