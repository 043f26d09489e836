"""A model's tensors as its config.pbtxt serves them: the batch, the declared dims, `reshape`, and
the class labels of `label_filename`; checked against each version's graph when it loads.

With `max_batch_size` N > 0 the first dimension of every input and output is the batch (the
graph's must be dynamic), a request's batch is at most N and every input's is the same, and
`dims` leave the batch out. An input's `reshape` is the graph's shape for the request's dims
(`[B, *dims]` runs as `[B, *reshape]`); an output's is the graph's shape that is answered as
its dims. Without a reshape, the dims must fit the graph's (a dynamic dimension of the graph
takes any size the config gives; a fixed one must be given as it is). The config lists every
input of the graph, or none (then the graph's are served as they are); the outputs it lists are
the ones served, all of them when it lists none. A `Predict` request (`classify`) runs on the
graph as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from foldserve._proto.inference.model_config_pb2 import DataType, ModelConfig
from foldserve.contract.layout import TRITON_CONFIG_FILE
from foldserve.core.datatypes import datatype_of
from foldserve.core.errors import ModelError, invalid
from foldserve.core.graph import TensorSpec
from foldserve.core.types import InferRequest

if TYPE_CHECKING:
    from foldserve.core.model import Model
    from foldserve.core.triton_config import TritonConfig

log = logging.getLogger(__name__)
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Interface:
    """What a config.pbtxt makes of a model version's tensors.

    Attributes:
        config: the config.pbtxt as read when the version loaded (what ModelConfig reports).
        max_batch_size: the largest batch (0: the inputs have no batch dimension).
        reshape_in: input name -> the graph's shape (past the batch) a request's is reshaped to.
        reshape_out: output name -> the shape (past the batch) the graph's is answered as.
    """

    config: ModelConfig
    max_batch_size: int
    reshape_in: dict[str, Shape]
    reshape_out: dict[str, Shape]


def triton_type(dtype: np.dtype) -> int:
    """Triton's `DataType` of a numpy dtype (V2's BYTES is Triton's TYPE_STRING)."""
    name = datatype_of(dtype).name
    return DataType.Value("TYPE_STRING" if name == "BYTES" else f"TYPE_{name}")


def configure(
    model: Model, triton: TritonConfig, given_labels: tuple[str, ...] | None, where: str
) -> Model:
    """`model` (its graph's tensors, checked) served as its config.pbtxt says.

    Args:
        given_labels: the class labels config.json gives, if it does.

    Raises:
        ModelError: the config does not fit the graph (the tensor and the key), a label file is
            missing or does not fit the classifier, or differs from config.json's labels or the
            file's own.
    """
    message = triton.message
    batch = message.max_batch_size
    where = f"{where}: {TRITON_CONFIG_FILE}"
    inputs, reshape_in = _served(model.inputs, message.input, batch, "input", where)
    outputs, reshape_out = _served(model.outputs, message.output, batch, "output", where)
    labels = _labels(model, triton, given_labels, where)
    interface = Interface(message, batch, reshape_in, reshape_out)
    return replace(model, inputs=inputs, outputs=outputs, class_labels=labels, interface=interface)


def _served(
    graph: Sequence[TensorSpec], declared: Sequence, batch: int, kind: str, where: str
) -> tuple[tuple[TensorSpec, ...], dict[str, Shape]]:
    by_name = {t.name: t for t in graph}
    names = [d.name for d in declared]
    unknown = [n for n in names if n not in by_name]
    twice = {n for n in names if names.count(n) > 1}
    missing = [n for n in by_name if n not in names] if kind == "input" and declared else []
    for wrong, what in ((unknown, "not in the graph"), (twice, "declared twice")):
        if wrong:
            known = list(by_name)
            raise ModelError(f"{where}: {kind}(s) {sorted(wrong)} {what}; the graph's: {known}")
    if missing:
        raise ModelError(
            f"{where}: input(s) {missing} of the graph not declared; declare every input of the "
            f"graph ({list(by_name)}), or none"
        )
    chosen = [(by_name[d.name], d) for d in declared] or [(t, None) for t in graph]
    served = [
        _tensor(spec, found, batch, kind == "input", f"{where}: {kind} {spec.name!r}")
        for spec, found in chosen
    ]
    specs = tuple(spec for spec, _ in served)
    return specs, {spec.name: shape for spec, shape in served if shape is not None}


def _tensor(
    spec: TensorSpec, declared, batch: int, is_input: bool, where: str
) -> tuple[TensorSpec, Shape | None]:
    """The served spec of one tensor, and its reshape (None: none): for an input the graph's
    shape, for an output the declared dims."""
    shown = spec.shown_shape
    if batch and (not spec.shape or spec.shape[0] is not None):
        raise ModelError(
            f"{where}: max_batch_size {batch} makes the first dimension the batch, but the "
            f"graph's shape {shown} has no dynamic first dimension"
        )
    past = spec.shape[1:] if batch else spec.shape
    if declared is None:
        return spec, None
    wanted = triton_type(spec.dtype)
    if declared.data_type not in (DataType.TYPE_INVALID, wanted):
        given, graphs = DataType.Name(declared.data_type), DataType.Name(wanted)
        raise ModelError(f"{where}: data_type {given}, but the graph's is {graphs}")
    dims = tuple(declared.dims) if declared.dims else tuple(-1 if d is None else d for d in past)
    if any(d < -1 or d == 0 for d in dims):
        raise ModelError(f"{where}: dims {list(dims)}: each is -1 (any size) or 1 or more")
    reshape = None
    if declared.HasField("reshape"):
        target = tuple(declared.reshape.shape)
        _check_reshape(past, dims, target, where)
        reshape = target if is_input else dims
    elif not _fits(past, dims):
        lead = "[batch] + " if batch else ""
        raise ModelError(
            f"{where}: dims {list(dims)} do not fit the graph's shape {shown} ({lead}dims; "
            "a fixed dimension must be given as it is, or mapped by a reshape)"
        )
    shape = ((None,) if batch else ()) + tuple(None if d == -1 else d for d in dims)
    return TensorSpec(spec.name, spec.dtype, shape), reshape


def _check_reshape(past: tuple, dims: Shape, target: Shape, where: str) -> None:
    if not _fits(past, target):
        graph = [-1 if d is None else d for d in past]
        raise ModelError(f"{where}: reshape {list(target)} does not fit the graph's {graph}")
    if (-1 in dims or -1 in target) and max(dims.count(-1), target.count(-1)) > 1:
        raise ModelError(f"{where}: dims {list(dims)}, reshape {list(target)}: one -1 at most")
    if -1 not in dims and -1 not in target and prod(dims) != prod(target):
        raise ModelError(
            f"{where}: dims {list(dims)} and reshape {list(target)} hold different numbers of "
            "values"
        )


def _fits(graph: tuple, dims: Shape) -> bool:
    if len(graph) != len(dims):
        return False
    return all(g is None or g == d for g, d in zip(graph, dims, strict=True))


def _labels(
    model: Model, triton: TritonConfig, given: tuple[str, ...] | None, where: str
) -> tuple[str, ...]:
    """The labels of the label file of the classifier's output, else the model's own."""
    chosen = None
    classifier = model.classifier
    for output in triton.message.output:
        if not output.label_filename:
            continue
        labels = _read_labels(triton.file.parent / output.label_filename, output.name, where)
        if classifier is None or output.name not in (classifier.logits, classifier.probabilities):
            log.info("%s: output %r: labels reported, not used by Predict", where, output.name)
            continue
        what = f"{where}: output {output.name!r} label_filename {output.label_filename!r}"
        if len(labels) != classifier.classes:
            raise ModelError(f"{what}: {len(labels)} labels for {classifier.classes} classes")
        for other, source in ((given, "config.json class_labels"), (chosen, "another label file")):
            if other is not None and other != labels:
                raise ModelError(f"{what}: the labels differ from {source}; give one list")
        if model.training is not None and labels != model.class_labels:
            raise ModelError(f"{what}: the labels differ from the model file's own")
        chosen = labels
    return model.class_labels if chosen is None else chosen


def _read_labels(file: Path, output: str, where: str) -> tuple[str, ...]:
    try:
        return tuple(file.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where}: output {output!r}: label file cannot be read: {exc}") from None


# --- per request ------------------------------------------------------------------------------


def graph_feeds(model: Model, request: InferRequest, feeds: dict) -> dict:
    """A checked request's inputs as the graph takes them: its batch checked against
    max_batch_size, reshaped as the config says (a `classify` request is graph-shaped already).

    Raises:
        RequestError: INVALID_ARGUMENT naming the input, for a batch over max_batch_size, inputs
            of different batches, or values that do not reshape.
    """
    interface = model.interface
    if interface is None or request.classify:
        return feeds
    batch = interface.max_batch_size
    if batch:
        _check_batch(request, batch)
    if not interface.reshape_in:
        return feeds
    reshaped = dict(feeds)
    for tensor in request.inputs:
        target = interface.reshape_in.get(tensor.name)
        if target is not None:
            field = f"{tensor.field}.shape"
            reshaped[tensor.name] = _reshape(feeds[tensor.name], target, batch, field)
    return reshaped


def served_outputs(model: Model, request: InferRequest, outputs: dict) -> dict:
    """The graph's outputs as the config declares them (reshaped)."""
    interface = model.interface
    if interface is None or request.classify or not interface.reshape_out:
        return outputs
    batch, shapes = interface.max_batch_size, interface.reshape_out
    answered = dict(outputs)
    for name in shapes.keys() & outputs.keys():
        answered[name] = _reshape(outputs[name], shapes[name], batch, f"output {name!r}")
    return answered


def examples(model: Model, request: InferRequest) -> int:
    """How many examples a request holds: its batch (the first dimension of its first input)
    when the model has one, else 1."""
    interface = model.interface
    if request.classify or (interface is not None and not interface.max_batch_size):
        return 1
    first = request.inputs[0].data if request.inputs else None
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _check_batch(request: InferRequest, limit: int) -> None:
    """Each input's batch within the config's `max_batch_size` (`core/validate.py` has checked
    that the inputs agree on it)."""
    for tensor in request.inputs:
        size = tensor.data.shape[0]
        if size > limit:
            raise invalid(
                f"{tensor.field}.shape: input {tensor.name!r}: a batch of {size}, over the "
                f"model's max_batch_size {limit}"
            )


def _reshape(value: np.ndarray, shape: Shape, batch: int, field: str) -> np.ndarray:
    lead = value.shape[:1] if batch else ()
    try:
        return value.reshape((*lead, *shape))
    except ValueError:
        raise invalid(
            f"{field}: {list(value.shape)} does not reshape to {[*lead, *shape]} (the "
            "config.pbtxt's reshape)"
        ) from None
