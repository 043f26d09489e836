"""Load one model file, check everything about it up front, and return a `Model`.

Every check of a file happens at load time, so a model that loads can be served. A file with
foldserve metadata is checked against it (`model_checks`): the metadata against the contract
(`service.contract`), the graph against the metadata, one real run, the input BatchNorm's
statistics against the input shape, and the shift monitor's taps and calibration against the
graph and the BN statistics. A file without (a model foldserve did not train) is read from its
graph (`foreign`). Either may have a `config.json` beside it (`model_config`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from service import contract
from service.contract import TAP_PREFIX, TAPS, ContractError, ModelConfig
from service.core.errors import ModelError
from service.core.foreign import read_foreign
from service.core.model import Model
from service.core.model_checks import check_foldserve_model
from service.core.model_config import config_for
from service.core.onnx_opset import default_opset
from service.core.onnx_prune import without_outputs
from service.defaults import MODEL_NAME
from service.runtime import ort


def session_options() -> ort.SessionOptions:
    """The onnxruntime options every served model runs with."""
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
        return ort.InferenceSession(data, session_options(), providers=["CPUExecutionProvider"])
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
