"""The load-time checks of a model file with foldserve metadata: the graph against the metadata,
one real run, the input BatchNorm's statistics against the input shape, and the shift monitor's
taps and calibration against the graph and the BN statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from service import contract
from service.contract import TAPS, ModelConfig
from service.core.errors import ModelError
from service.core.monitor import build_statistic

if TYPE_CHECKING:
    from service.core.model import Model


def check_foldserve_model(where: str, model: Model, config: ModelConfig) -> None:
    """Every check of a loaded foldserve model file, and its config file against it.

    Raises:
        ModelError: the first check that fails, naming what is wrong.
    """
    _check_graph(where, model)
    _check_input_bn(where, model)
    _check_taps(where, model)
    labels = config.class_labels
    if labels is not None and labels != model.class_labels:
        raise ModelError(
            f"{where}: config.json class_labels {list(labels)} differ from the file's "
            f"{contract.KEYS['class_labels']} {list(model.class_labels)}; leave them out of "
            "config.json, or give the same"
        )


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
