"""The fold pass: trace a network with torch.fx, fold every BatchNorm it can, rewire the graph.

A BN after its producer (Linear, Conv, ConvTranspose) folds *backward* into the producer's
weights; a BN before its consumer (Linear, or a Conv that pads no zeros) folds *forward* into the
consumer. Backward is preferred. When a fold would not be exact (`training.fold.rules`), the BN
stays and the report says why.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.modules.batchnorm import _BatchNorm

from foldserve.contract import BACKWARD, FORWARD, BNStats, LeftLayer
from foldserve.training.fold import rules
from foldserve.training.fold.layers import fold_bn_into_consumer, fold_bn_into_producer
from foldserve.training.fold.report import FoldError, FoldResult


class _Tracer(fx.Tracer):
    """symbolic_trace's tracer, but every BatchNorm is a leaf, subclasses included.

    Tracing into a BN subclass would hit the training-mode branches of BatchNorm.forward; as a
    leaf it shows up in the graph, is reported as left, and the model still traces.
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _BatchNorm) or super().is_leaf_module(m, module_qualified_name)


def fold_batchnorm(
    model: nn.Module, *, example_inputs: tuple[torch.Tensor, ...] | None = None
) -> FoldResult:
    """Fold ``model``'s BatchNorm layers away, in an eval-mode copy (the original is untouched).

    Args:
        model: a network that `torch.fx.symbolic_trace` can trace.
        example_inputs: optional inputs to ``model``. Linear/BN folding assumes ``[batch,
            features]`` activations (BN normalizes axis 1, Linear mixes the last axis); with
            example inputs the actual ranks are checked and mismatched pairs are left.

    Returns:
        The folded copy (a `torch.fx.GraphModule`, in eval mode) and its report.

    Raises:
        FoldError: the model cannot be traced, or a called BN has ``track_running_stats=False``.
    """
    model_copy = copy.deepcopy(model).eval()
    try:
        gm = fx.GraphModule(model_copy, _Tracer().trace(model_copy))
    except Exception as exc:
        raise FoldError(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc
    gm.eval()
    _check_running_stats(gm)
    if example_inputs is not None:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    folded = _fold_graph(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return FoldResult(gm, folded, _left_in_place(gm))


def _check_running_stats(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        bn = rules.module_of(gm, node)
        if isinstance(bn, _BatchNorm) and (bn.running_mean is None or bn.running_var is None):
            raise FoldError(
                f"BatchNorm '{node.target}' has track_running_stats=False: it normalizes each "
                "batch with that batch's own statistics, so it cannot serve one example at a "
                "time; train it with track_running_stats=True"
            )


def _fold_graph(gm: fx.GraphModule) -> list[BNStats]:
    """Fold until nothing more folds: one fold can open another (BN→BN→Linear)."""
    folded: list[BNStats] = []
    progress = True
    while progress:
        progress = False
        for node in list(gm.graph.nodes):
            is_bn = isinstance(rules.module_of(gm, node), _BatchNorm)
            if not is_bn or rules.bn_obstacle(gm, node):
                continue
            if rules.backward_obstacle(gm, node) is None:
                folded.append(_apply(gm, node, rules.bn_input(node), BACKWARD))
            elif rules.forward_obstacle(gm, node) is None:
                folded.append(_apply(gm, node, next(iter(node.users)), FORWARD))
            else:
                continue
            progress = True
    return folded


def _apply(gm: fx.GraphModule, bn_node: fx.Node, layer_node: fx.Node, direction: str) -> BNStats:
    bn = gm.get_submodule(bn_node.target)
    layer = gm.get_submodule(layer_node.target)
    if direction == BACKWARD:
        gm.set_submodule(layer_node.target, fold_bn_into_producer(layer, bn))
        bn_node.replace_all_uses_with(layer_node)
    else:
        gm.set_submodule(layer_node.target, fold_bn_into_consumer(bn, layer))
        layer_node.replace_input_with(bn_node, bn_node.args[0])
    reads_model_input = isinstance(bn_node.args[0], fx.Node) and bn_node.args[0].op == "placeholder"
    gm.graph.erase_node(bn_node)
    n = bn.num_features
    return BNStats(
        layer=bn_node.target,
        folded_into=layer_node.target,
        direction=direction,
        mean=tuple(bn.running_mean.double().tolist()),
        var=tuple(bn.running_var.double().tolist()),
        gamma=tuple(bn.weight.double().tolist()) if bn.affine else (1.0,) * n,
        beta=tuple(bn.bias.double().tolist()) if bn.affine else (0.0,) * n,
        eps=float(bn.eps),
        reads_model_input=reads_model_input,
    )


def _left_in_place(gm: fx.GraphModule) -> list[LeftLayer]:
    left: dict[str, LeftLayer] = {}
    for node in gm.graph.nodes:
        if isinstance(rules.module_of(gm, node), _BatchNorm) and node.target not in left:
            reason = rules.bn_obstacle(gm, node) or (
                f"backward: {rules.backward_obstacle(gm, node)}; "
                f"forward: {rules.forward_obstacle(gm, node)}"
            )
            left[node.target] = LeftLayer(node.target, reason)
    for name, module in gm.named_modules():
        if isinstance(module, _BatchNorm) and name not in left:
            left[name] = LeftLayer(name, "its attributes are read directly, not called as a layer")
    return list(left.values())
