"""The load-time checks of a model file with foldserve metadata: the graph against the metadata,
one real run, the input BatchNorm's statistics against the input shape, and the graph's taps
output against the metadata's taps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from foldserve import contract
from foldserve.contract import SOURCE_TAPS, TAPS, ModelMetadata
from foldserve.core.errors import ModelError
from foldserve.core.graph import TensorSpec

if TYPE_CHECKING:
    from foldserve.core.model import Model


def check_metadata_graph(
    where: str,
    metadata: ModelMetadata,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
) -> None:
    """The graph has the input and outputs the metadata names, of the right type.

    Raises:
        ModelError: naming the key and what the graph has instead.
    """
    found = {t.name: t for t in inputs}
    name = metadata.input_name
    if name not in found:
        raise ModelError(
            f"{where}: the graph has no input {name!r} ({contract.KEYS['input_name']}); "
            f"its inputs are {sorted(found)}"
        )
    if found[name].dtype != np.float32:
        raise ModelError(f"{where}: input {name!r} is {found[name].dtype}, expected float32")
    graph_outputs = {o.name for o in outputs}
    wanted = set(metadata.output_names) | set(contract.OUTPUT_NAMES)
    if not wanted <= graph_outputs:
        raise ModelError(
            f"{where}: the graph must have outputs {sorted(wanted)}, has {sorted(graph_outputs)}"
        )


def check_against_metadata(where: str, model: Model) -> None:
    """One real run fits the metadata; so do the input BN's statistics and the taps.

    Raises:
        ModelError: the first check that fails, naming what is wrong.
    """
    _check_run(where, model)
    _check_input_bn(where, model)
    _check_taps(where, model)


def _example(model: Model) -> dict[str, np.ndarray]:
    classifier = model.require_classifier()
    return {classifier.input.name: np.zeros((1, *classifier.example_shape), np.float32)}


def _check_run(where: str, model: Model) -> None:
    """One real run proves the declared shape fits the graph and the classes match the outputs."""
    shape = list(model.require_classifier().example_shape)
    try:
        outputs = model.run(_example(model), contract.OUTPUT_NAMES)
    except Exception as exc:
        raise ModelError(f"{where}: running one example of shape {shape} failed: {exc}") from None
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
    metadata = model.training
    stats = metadata.input_bn if metadata else None
    if stats is None:
        return
    index = model.bn_stats.index(stats)
    shape = model.require_classifier().example_shape
    if shape[0] != stats.num_features:
        raise ModelError(
            f"{where}: {contract.KEYS['bn_stats']}[{index}] (layer {stats.layer!r}, over the "
            f"model input) has {stats.num_features} channels, but one example has shape "
            f"{list(shape)} (channels first)"
        )


def _check_taps(where: str, model: Model) -> None:
    """The graph's `taps` output has the width the metadata's taps declare."""
    shift = model.shift
    if shift is None or shift.tapped_session is None:
        return
    width = shift.widths[SOURCE_TAPS]
    try:
        taps = model.run(_example(model), [TAPS], tapped=True)[TAPS]
    except Exception as exc:
        raise ModelError(f"{where}: running one example with its taps failed: {exc}") from None
    if taps.shape != (1, width):
        raise ModelError(
            f"{where}: output {TAPS!r} has shape {list(taps.shape)} for one example, but "
            f"{contract.KEYS['taps']} describes {width} values"
        )
