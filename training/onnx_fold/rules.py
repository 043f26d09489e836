"""When a BatchNormalization node may fold, into what, and why not.

Each check returns a `Plan` when the fold would be exact, else the reason (a sentence the report
carries). A BN folds *backward* into the layer that produces its input (Conv, ConvTranspose, Gemm,
MatMul, or MatMul followed by a bias Add) or *forward* into the layer that reads its output (Gemm,
MatMul, or a Conv that pads no zeros). Either way the neighbour's weights must be constants in the
file, and the values in between must be read by nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from foldserve.contract import BACKWARD, FORWARD
from foldserve.training.onnx_fold.graph import DEFAULT_DOMAINS, GraphIndex, attribute, label

FOLDABLE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CONSUMERS = ("Conv", "Gemm", "MatMul")
_ROLES = ("scale", "B", "input_mean", "input_var")


@dataclass(frozen=True)
class BNParams:
    """A BN node's constants, in float64: ``y = (x - mean) / sqrt(var + eps) * gamma + beta``."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    @property
    def channels(self) -> int:
        return self.mean.size


@dataclass(frozen=True)
class Plan:
    """One exact fold: which neighbour takes the BN, and where its weight and bias live.

    Attributes:
        direction: `BACKWARD` (the BN follows `layer`) or `FORWARD` (it precedes `layer`).
        layer: the Conv/ConvTranspose/Gemm/MatMul node whose weights change.
        bias_node: the node that holds the bias: `layer` itself, a MatMul's following Add, or
            None when a MatMul has none yet (the rewrite adds one).
        bias_slot: which input of `bias_node` is (or becomes) the bias.
        bias: the name of that input, None when there is none yet.
    """

    direction: str
    layer: onnx.NodeProto
    bias_node: onnx.NodeProto | None
    bias_slot: int | None
    bias: str | None

    @property
    def kind(self) -> str:
        return self.layer.op_type


def bn_params(index: GraphIndex, node: onnx.NodeProto) -> BNParams | str:
    """The BN's constants, or why this BN cannot fold whatever its neighbours."""
    if attribute(node, "training_mode", 0) == 1:
        return "training_mode=1: it normalizes with each batch's own statistics"
    if index.opset < 7 and attribute(node, "is_test", 0) == 0:
        return "is_test=0 (opset 6 and older): the training-mode form"
    if attribute(node, "spatial", 1) == 0:
        return "spatial=0: its statistics are per activation, not per channel"
    extra = [name for name in node.output[1:] if name]
    if extra:
        return (
            f"it has {1 + len(extra)} outputs ({', '.join(extra)}): the training-mode form, "
            "which computes or updates statistics"
        )
    if len(node.input) != 5:
        return f"it has {len(node.input)} inputs, expected 5 (X, scale, B, mean, var)"
    values = []
    for role, name in zip(_ROLES, node.input[1:], strict=True):
        value = index.constant(name)
        if value is None:
            return f"its {role} '{name}' is not a constant (a graph input or computed at run time)"
        if value.ndim != 1:
            return (
                f"its {role} '{name}' has shape {list(value.shape)}, expected one value per channel"
            )
        values.append(value.astype(np.float64))
    gamma, beta, mean, var = values
    eps = float(attribute(node, "epsilon", 1e-5))
    if len({v.size for v in values}) != 1:
        sizes = [v.size for v in values]
        return f"its scale, B, mean and var have {sizes} values: not one per channel"
    if not all(np.isfinite(v).all() for v in values) or not np.all(var + eps > 0):
        return "its statistics are not finite, or var + epsilon is not positive"
    return BNParams(gamma, beta, mean, var, eps)


def backward_plan(index: GraphIndex, bn: onnx.NodeProto, params: BNParams) -> Plan | str:
    """How the BN folds into the layer that produces its input, or why it cannot."""
    source = bn.input[0]
    producer = index.producer.get(source)
    if producer is None:
        kind = "a graph input" if index.is_model_input(source) else "a constant"
        return f"its input '{source}' is {kind}, not a layer's output"
    if index.uses(source) > 1:
        return (
            f"{_describe(producer)} output '{source}' has {index.uses(source)} readers: folding "
            "would change what the others see"
        )
    if producer.domain not in DEFAULT_DOMAINS or producer.op_type not in (*PRODUCERS, "Add"):
        return f"its input comes from {_describe(producer)}, not Conv/ConvTranspose/Gemm/MatMul"
    if producer.op_type == "Add":
        return _matmul_add_backward(index, producer, params)
    if producer.op_type == "MatMul":
        reason = _matmul_obstacle(index, producer, source, 1, params)
        return reason or Plan(BACKWARD, producer, None, None, None)
    reason = _layer_obstacle(index, producer, params, BACKWARD)
    return reason or Plan(BACKWARD, producer, producer, 2, _optional_input(producer, 2))


def forward_plan(index: GraphIndex, bn: onnx.NodeProto, params: BNParams) -> Plan | str:
    """How the BN folds into the layer that reads its output, or why it cannot."""
    output = bn.output[0]
    if output in index.graph_outputs:
        return f"its output '{output}' is a graph output"
    reader = index.only_consumer(output)
    if reader is None:
        return f"its output '{output}' has {index.uses(output)} readers, not one"
    consumer, slot = reader
    if consumer.domain not in DEFAULT_DOMAINS or consumer.op_type not in CONSUMERS:
        if consumer.op_type == "ConvTranspose":
            return (
                f"it feeds {_describe(consumer)}: a constant input shift does not give a constant "
                "output shift at its borders"
            )
        return f"it feeds {_describe(consumer)}, not Conv/Gemm/MatMul"
    if slot != 0:
        return f"it feeds {_describe(consumer)} as input {slot}, not as its data input"
    if consumer.op_type == "MatMul":
        reason = _matmul_obstacle(index, consumer, output, 0, params)
        return reason or _matmul_forward(index, consumer)
    reason = _layer_obstacle(index, consumer, params, FORWARD)
    return reason or Plan(FORWARD, consumer, consumer, 2, _optional_input(consumer, 2))


def _layer_obstacle(
    index: GraphIndex, node: onnx.NodeProto, params: BNParams, direction: str
) -> str | None:
    """Checks of a Conv/ConvTranspose/Gemm neighbour: constant weights, channels, layout."""
    reason = _constant_obstacle(index, node, 1, "weight") or _constant_obstacle(
        index, node, 2, "bias"
    )
    if reason:
        return reason
    weight = index.constant(node.input[1])
    if weight.ndim < 2:
        return f"{_describe(node)} weight has rank {weight.ndim}"
    groups = int(attribute(node, "group", 1))
    if node.op_type == "Gemm":
        if int(attribute(node, "transA", 0)) and direction == FORWARD:
            return f"{_describe(node)} has transA=1: the BN's axis 1 would be its batch axis"
        trans_b = int(attribute(node, "transB", 0))
        axis = (0 if trans_b else 1) if direction == BACKWARD else (1 if trans_b else 0)
        channels = weight.shape[axis]
    elif node.op_type == "ConvTranspose":
        channels = weight.shape[1] * groups
    else:
        channels = weight.shape[0] if direction == BACKWARD else weight.shape[1] * groups
    if channels != params.channels:
        return f"{_describe(node)} has {channels} channels where the BN has {params.channels}"
    if node.op_type == "Conv" and direction == FORWARD:
        return _padding_obstacle(node)
    return None


def _padding_obstacle(conv: onnx.NodeProto) -> str | None:
    auto_pad = attribute(conv, "auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        return f"{_describe(conv)} has auto_pad={auto_pad}: the zeros it pads would not be shifted"
    pads = attribute(conv, "pads", None) or []
    if auto_pad == "NOTSET" and any(pads):
        return f"{_describe(conv)} has pads {list(pads)}: the zeros it pads would not be shifted"
    return None


def _matmul_obstacle(
    index: GraphIndex, node: onnx.NodeProto, value: str, axis: int, params: BNParams
) -> str | None:
    """A MatMul folds only as ``[batch, in] @ W[in, out]`` with a constant W: the BN normalizes
    axis 1, and only for rank-2 values is that the axis the weight mixes or makes.

    ``value`` is the MatMul's data input (forward) or output (backward); ``axis`` the weight's
    axis that meets the BN's channels: 0 (``in``, forward) or 1 (``out``, backward).
    """
    reason = _constant_obstacle(index, node, 1, "weight")
    if reason:
        return reason
    weight = index.constant(node.input[1])
    if weight.ndim != 2:
        return f"{_describe(node)} weight has rank {weight.ndim}, not 2"
    rank = index.ranks.get(value)
    if rank != 2:
        seen = "unknown" if rank is None else str(rank)
        return (
            f"'{value}' has rank {seen}: the BN normalizes axis 1, {_describe(node)} mixes the "
            "last axis, and only for rank 2 are they the same"
        )
    channels = weight.shape[axis]
    if channels != params.channels:
        return f"{_describe(node)} has {channels} channels where the BN has {params.channels}"
    return None


def _matmul_add_backward(index: GraphIndex, add: onnx.NodeProto, params: BNParams) -> Plan | str:
    """MatMul → Add(bias) → BN, as tf2onnx writes a Dense layer."""
    for slot in (0, 1):
        matmul = index.producer.get(add.input[slot])
        bias = add.input[1 - slot]
        if matmul is not None and matmul.op_type == "MatMul" and index.constant(bias) is not None:
            break
    else:
        return f"its input comes from {_describe(add)}, which does not add a constant to a MatMul"
    product = add.input[slot]
    if index.uses(product) > 1:
        return f"{_describe(matmul)} output '{product}' has {index.uses(product)} readers"
    reason = _matmul_obstacle(index, matmul, product, 1, params) or _bias_obstacle(
        index, add, bias, params.channels
    )
    return reason or Plan(BACKWARD, matmul, add, 1 - slot, bias)


def _matmul_forward(index: GraphIndex, matmul: onnx.NodeProto) -> Plan:
    """BN → MatMul [→ Add(bias)]: the shift joins that bias when there is a plain one."""
    reader = index.only_consumer(matmul.output[0])
    if reader is not None and reader[0].op_type == "Add" and reader[0].domain in DEFAULT_DOMAINS:
        add, slot = reader
        bias = add.input[1 - slot]
        width = index.constant(matmul.input[1]).shape[1]
        if index.constant(bias) is not None and _bias_obstacle(index, add, bias, width) is None:
            return Plan(FORWARD, matmul, add, 1 - slot, bias)
    return Plan(FORWARD, matmul, None, None, None)


def _bias_obstacle(index: GraphIndex, add: onnx.NodeProto, bias: str, width: int) -> str | None:
    """A bias folds when it is one value per output channel (or one for all), in a float type."""
    value = index.constant(bias)
    if value.dtype not in FOLDABLE_DTYPES:
        return f"{_describe(add)} adds a {value.dtype} constant"
    if value.ndim > 2 or (value.ndim == 2 and value.shape[0] != 1):
        return f"{_describe(add)} adds a constant of shape {list(value.shape)}, not a bias row"
    if value.ndim and value.shape[-1] not in (1, width):
        return f"{_describe(add)} adds {value.shape[-1]} values to {width} channels"
    return None


def _constant_obstacle(index: GraphIndex, node: onnx.NodeProto, slot: int, role: str) -> str | None:
    name = _optional_input(node, slot)
    if name is None:
        return None if role == "bias" else f"{_describe(node)} has no {role}"
    dtype = index.dtype(name) if index.constant(name) is not None else None
    if dtype is None:
        return (
            f"{_describe(node)} {role} '{name}' is not a constant "
            "(a graph input or computed at run time)"
        )
    if dtype not in FOLDABLE_DTYPES:
        return f"{_describe(node)} {role} is {dtype}; only float32 and float64 weights are folded"
    return None


def _optional_input(node: onnx.NodeProto, slot: int) -> str | None:
    return node.input[slot] if len(node.input) > slot and node.input[slot] else None


def _describe(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{label(node)}'"
