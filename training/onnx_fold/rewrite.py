"""Carry out one fold on the model: new weights, rewired values, the BN node gone.

Names are kept: the layer that absorbs a backward-folded BN takes over the BN's output name, so
graph outputs and every reader downstream see the same names; a weight used only by that layer
is replaced under its own name, a shared one is copied under a new name (the others keep theirs).
Only what the fold made dead is removed: the BN node, and the constants (initializers and the
nodes that computed them) that feed nothing else now.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from foldserve.contract import BACKWARD, BNStats
from foldserve.training.onnx_fold import arithmetic
from foldserve.training.onnx_fold.graph import DEFAULT_DOMAINS, GraphIndex, attribute, label, walk
from foldserve.training.onnx_fold.rules import BNParams, Plan


def apply(
    model: onnx.ModelProto, index: GraphIndex, bn: onnx.NodeProto, params: BNParams, plan: Plan
) -> BNStats:
    """Fold ``bn`` as ``plan`` says, in place; ``index`` must describe ``model`` as it is now.

    Returns:
        The contract's record of the folded BN (statistics, where it went).
    """
    stats = BNStats(
        layer=label(bn),
        folded_into=label(plan.layer),
        direction=plan.direction,
        mean=tuple(params.mean.tolist()),
        var=tuple(params.var.tolist()),
        gamma=tuple(params.gamma.tolist()),
        beta=tuple(params.beta.tolist()),
        eps=params.eps,
        reads_model_input=index.is_model_input(bn.input[0]),
    )
    scale, shift = arithmetic.bn_scale_shift(
        params.mean, params.var, params.eps, params.gamma, params.beta
    )
    weight = index.constant(plan.layer.input[1])
    bias = index.constant(plan.bias) if plan.bias else None
    new_weight, new_bias = _folded_values(plan, weight, bias, scale, shift)
    names = Names(model)
    dead = [*bn.input[1:], plan.layer.input[1], *([plan.bias] if plan.bias else [])]
    _set_constant(model, index, names, plan.layer, 1, new_weight.astype(weight.dtype))
    bias_dtype = weight.dtype if bias is None else bias.dtype
    if plan.layer.op_type == "Gemm":
        _set_unit_alpha_beta(plan.layer)
    _rewire(model, index, names, bn, plan, new_bias.astype(bias_dtype))
    _remove_dead(model, dead)
    return stats


def _folded_values(
    plan: Plan, weight: np.ndarray, bias: np.ndarray | None, scale: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """New weight (in the node's own layout) and bias, in float64."""
    layer, backward = plan.layer, plan.direction == BACKWARD
    groups = int(attribute(layer, "group", 1))
    if layer.op_type == "ConvTranspose":
        return arithmetic.fold_backward(weight, bias, scale, shift, groups=groups, transposed=True)
    if layer.op_type == "Conv":
        fold = arithmetic.fold_backward if backward else arithmetic.fold_forward
        return fold(weight, bias, scale, shift, groups=groups)
    # Gemm and MatMul: the arithmetic takes [out, in]; Gemm's alpha and beta are folded in too
    # (the rewrite then sets both to 1).
    trans_b = layer.op_type == "Gemm" and int(attribute(layer, "transB", 0))
    matrix = np.asarray(weight, np.float64) if trans_b else np.asarray(weight, np.float64).T
    if layer.op_type == "Gemm":
        matrix = matrix * float(attribute(layer, "alpha", 1.0))
        bias = None if bias is None else bias * float(attribute(layer, "beta", 1.0))
    fold = arithmetic.fold_backward if backward else arithmetic.fold_forward
    new_matrix, new_bias = fold(matrix, bias, scale, shift)
    return (new_matrix if trans_b else new_matrix.T), new_bias


def _rewire(
    model: onnx.ModelProto,
    index: GraphIndex,
    names: Names,
    bn: onnx.NodeProto,
    plan: Plan,
    bias: np.ndarray,
) -> None:
    """Put the bias in place and route the values around the BN node, then drop it."""
    graph, layer = model.graph, plan.layer
    position = _position(graph, bn)
    gone = bn.output[0] if plan.direction != BACKWARD else bn.input[0]
    if plan.bias_node is not None:
        _set_constant(model, index, names, plan.bias_node, plan.bias_slot, bias)
    if plan.direction == BACKWARD:
        # The value the BN read was read by the BN alone: its producer now writes the BN's output.
        if plan.bias_node is None:  # a MatMul without a bias: a new Add after it, where the BN was
            add = _bias_add(names, layer, layer.output[0], bias, bn.output[0], model)
            graph.node.insert(position + 1, add)
            gone = None
        else:
            plan.bias_node.output[0] = bn.output[0]
    else:
        layer.input[0] = bn.input[0]
        if plan.bias_node is None:  # a MatMul without a bias: its output moves to a new Add
            output = layer.output[0]
            layer.output[0] = names.fresh(f"{output}_unbiased")
            # Later folds ask the rank of the new value (the index's dicts outlive this fold).
            if output in index.ranks:
                index.ranks[layer.output[0]] = index.ranks[output]
            add = _bias_add(names, layer, layer.output[0], bias, output, model)
            graph.node.insert(_position(graph, layer) + 1, add)
    del graph.node[_position(graph, bn)]
    if gone:
        _drop_value_info(graph, gone)


def _bias_add(
    names: Names,
    layer: onnx.NodeProto,
    value: str,
    bias: np.ndarray,
    output: str,
    model: onnx.ModelProto,
) -> onnx.NodeProto:
    bias_name = names.fresh(f"{label(layer)}_bias")
    model.graph.initializer.append(numpy_helper.from_array(bias, bias_name))
    return helper.make_node("Add", [value, bias_name], [output], name=names.fresh(bias_name))


def _set_constant(
    model: onnx.ModelProto,
    index: GraphIndex,
    names: Names,
    node: onnx.NodeProto,
    slot: int,
    value: np.ndarray,
) -> None:
    """Make input ``slot`` of ``node`` the constant ``value``."""
    current = node.input[slot] if len(node.input) > slot else ""
    if current and current in index.initializers and index.uses(current) == 1:
        for tensor in model.graph.initializer:
            if tensor.name == current:
                tensor.CopyFrom(numpy_helper.from_array(value, current))
                return
    # A new initializer: the old value is shared, comes through Identity/Constant, or is absent.
    name = names.fresh(f"{current}_folded" if current else f"{label(node)}_bias")
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    while len(node.input) <= slot:
        node.input.append("")
    node.input[slot] = name


def _set_unit_alpha_beta(gemm: onnx.NodeProto) -> None:
    kept = [a for a in gemm.attribute if a.name not in ("alpha", "beta")]
    del gemm.attribute[:]
    gemm.attribute.extend(kept)


def _remove_dead(model: onnx.ModelProto, candidates: list[str]) -> None:
    """Remove what among ``candidates`` nothing reads any more: initializers, and the nodes that
    computed them (a `Constant`, an `Identity`, the small constant subgraphs of
    `foldserve.training.onnx_fold.constants`), with whatever fed only those."""
    pending = [c for c in candidates if c]
    while pending:
        index = GraphIndex(model)
        name = pending.pop()
        if index.uses(name) or name in index.graph_inputs:
            continue
        producer = index.producer.get(name)
        if producer is not None:
            if producer.domain in DEFAULT_DOMAINS and not any(
                index.uses(output) for output in producer.output if output
            ):
                pending.extend(producer.input)
                del model.graph.node[_position(model.graph, producer)]
                for output in producer.output:
                    _drop_value_info(model.graph, output)
        elif name in index.initializers:
            kept = [t for t in model.graph.initializer if t.name != name]
            del model.graph.initializer[:]
            model.graph.initializer.extend(kept)


def _drop_value_info(graph: onnx.GraphProto, name: str) -> None:
    kept = [v for v in graph.value_info if v.name != name]
    if len(kept) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(kept)


def _position(graph: onnx.GraphProto, node: onnx.NodeProto) -> int:
    """Where ``node`` sits in ``graph``: found by its first output, which no other node writes."""
    for position, candidate in enumerate(graph.node):
        if candidate.output[0] == node.output[0] and candidate.op_type == node.op_type:
            return position
    raise ValueError(f"node {label(node)!r} is not in the graph")


class Names:
    """Fresh names that clash with no value, initializer or node name of the model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.taken = {t.name for t in graph.initializer} | {v.name for v in graph.input}
        for node in walk(graph):  # subgraph names too: ONNX names are unique across scopes
            self.taken |= {node.name, *node.input, *node.output}

    def fresh(self, base: str) -> str:
        name, number = base, 1
        while name in self.taken:
            number += 1
            name = f"{base}_{number}"
        self.taken.add(name)
        return name
