"""Fold eval-mode BatchNorm layers into neighbouring Linear/Conv weights with a torch.fx pass.

A BN after its producer (Linear, Conv, ConvTranspose) folds *backward* into the producer's weights;
a BN before its consumer (Linear, or a Conv that pads no zeros) folds *forward* into the consumer.
Backward is preferred. A BN is left in place, with the reason in the fold report, wherever a fold
would not be exact. The arithmetic lives in `training.fold_math`; this module finds the pairs in
the traced graph and rewires it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.modules.batchnorm import _BatchNorm

from training import fold_math

__all__ = [
    "FoldError",
    "FoldReport",
    "FoldedBN",
    "LeftBN",
    "fold_batchnorm",
    "fold_bn_into_consumer",
    "fold_bn_into_producer",
]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Exact types, not isinstance: a subclass may transform its weight in forward (weight
# standardization, say), and a BN subclass may not normalize the way eval BN does.
_PRODUCERS = (nn.Linear, *_CONVS, *_CONV_TRANSPOSES)
_CONSUMERS = (nn.Linear, *_CONVS)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

Layer = nn.Linear | nn.modules.conv._ConvNd


class _Tracer(fx.Tracer):
    """symbolic_trace's tracer, but every BatchNorm is a leaf, subclasses included.

    Tracing into a BN subclass would hit the training-mode branches of BatchNorm.forward; as a
    leaf it shows up in the graph, is reported as left, and the model still traces.
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _BatchNorm) or super().is_leaf_module(m, module_qualified_name)


class FoldError(Exception):
    """The model cannot be folded into a network that serves one example at a time."""


@dataclass(frozen=True)
class FoldedBN:
    """A BN that was folded, with the statistics it carried (the shift monitor reads them)."""

    bn: str
    into: str
    direction: str
    num_features: int
    mean: list[float]
    var: list[float]
    gamma: list[float]
    beta: list[float]
    eps: float
    # The BN normalized the model's own input, so its statistics describe the raw features the
    # service receives: the shift monitor compares live traffic against them.
    reads_model_input: bool = False


@dataclass(frozen=True)
class LeftBN:
    """A BN left in place because folding it would not be exact."""

    bn: str
    reason: str


@dataclass
class FoldReport:
    """What folded into what, and what was left and why."""

    folded: list[FoldedBN] = field(default_factory=list)
    left: list[LeftBN] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        """The report without statistics: ``{"folded": [{bn, into, direction}], "left": [...]}``."""
        return {
            "folded": [{"bn": f.bn, "into": f.into, "direction": f.direction} for f in self.folded],
            "left": [{"bn": x.bn, "reason": x.reason} for x in self.left],
        }

    def bn_stats(self) -> list[dict[str, Any]]:
        """One dict per folded BN with every `FoldedBN` field."""
        return [asdict(f) for f in self.folded]


def fold_batchnorm(
    model: nn.Module, *, example_inputs: tuple[torch.Tensor, ...] | None = None
) -> nn.Module:
    """Return an eval-mode copy of ``model`` with its BatchNorm layers folded away.

    The original is not modified. The copy is a `torch.fx.GraphModule` with a ``fold_report``
    attribute (a `FoldReport`); it holds no BatchNorm modules but those the report lists as left.

    Args:
        model: a network that `torch.fx.symbolic_trace` can trace.
        example_inputs: optional inputs to ``model``. Linear/BN folding assumes ``[batch,
            features]`` activations (BN normalizes axis 1, Linear mixes the last axis); with
            example inputs the actual ranks are checked and mismatched pairs are left.

    Returns:
        The folded copy, in eval mode.

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
    gm.fold_report = FoldReport(folded=folded, left=_left_in_place(gm))
    # GraphModule.__deepcopy__ rebuilds the module and restores only the attributes listed under
    # this meta key (the mechanism torch.ao quantization uses); without it a copy loses the report.
    gm.meta.setdefault("_user_preserved_attributes", {})["fold_report"] = gm.fold_report
    return gm


def fold_bn_into_producer(layer: Layer, bn: _BatchNorm) -> Layer:
    """Return a copy of ``layer`` that also applies ``bn`` to its output (backward fold).

    Both must be in eval mode; ``layer`` is a Linear, Conv or ConvTranspose.
    """
    scale, shift = _scale_shift(layer, bn)
    weight, bias = fold_math.fold_backward(
        layer.weight,
        layer.bias,
        scale,
        shift,
        groups=getattr(layer, "groups", 1),
        transposed=isinstance(layer, _CONV_TRANSPOSES),
    )
    return _with_params(layer, weight, bias)


def fold_bn_into_consumer(bn: _BatchNorm, layer: Layer) -> Layer:
    """Return a copy of ``layer`` that first applies ``bn`` to its input (forward fold).

    Both must be in eval mode; ``layer`` is a Linear or Conv. For a Conv the result is exact only
    if the conv pads no zeros; `fold_batchnorm` checks that, this function does not.
    """
    if isinstance(layer, _CONV_TRANSPOSES):
        raise ValueError("a BN cannot fold forward into a ConvTranspose")
    scale, shift = _scale_shift(layer, bn)
    weight, bias = fold_math.fold_forward(
        layer.weight, layer.bias, scale, shift, groups=getattr(layer, "groups", 1)
    )
    return _with_params(layer, weight, bias)


def _scale_shift(layer: Layer, bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    if layer.training or bn.training:
        raise ValueError("BN folding is only for eval mode: call .eval() on both modules")
    if bn.running_mean is None or bn.running_var is None:
        raise FoldError("a BN without running statistics cannot be folded")
    return fold_math.bn_scale_shift(bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)


def _with_params(layer: Layer, weight: torch.Tensor, bias: torch.Tensor) -> Layer:
    folded = copy.deepcopy(layer)
    # New Parameter objects, never in-place edits: a weight tied to another module stays intact.
    folded.weight = nn.Parameter(weight, layer.weight.requires_grad)
    folded.bias = nn.Parameter(bias, layer.weight.requires_grad)
    return folded


def _check_running_stats(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        bn = _module(gm, node)
        if isinstance(bn, _BatchNorm) and (bn.running_mean is None or bn.running_var is None):
            raise FoldError(
                f"BatchNorm '{node.target}' has track_running_stats=False: it normalizes each "
                "batch with that batch's own statistics, so it cannot serve one example at a "
                "time; train it with track_running_stats=True"
            )


def _fold_graph(gm: fx.GraphModule) -> list[FoldedBN]:
    """Fold until nothing more folds: one fold can open another (BN→BN→Linear)."""
    folded: list[FoldedBN] = []
    progress = True
    while progress:
        progress = False
        for node in list(gm.graph.nodes):
            if not isinstance(_module(gm, node), _BatchNorm) or _bn_obstacle(gm, node):
                continue
            if _backward_obstacle(gm, node) is None:
                folded.append(_apply(gm, node, _bn_input(node), "backward"))
            elif _forward_obstacle(gm, node) is None:
                folded.append(_apply(gm, node, next(iter(node.users)), "forward"))
            else:
                continue
            progress = True
    return folded


def _apply(gm: fx.GraphModule, bn_node: fx.Node, layer_node: fx.Node, direction: str) -> FoldedBN:
    bn = gm.get_submodule(bn_node.target)
    layer = gm.get_submodule(layer_node.target)
    if direction == "backward":
        gm.set_submodule(layer_node.target, fold_bn_into_producer(layer, bn))
        bn_node.replace_all_uses_with(layer_node)
    else:
        gm.set_submodule(layer_node.target, fold_bn_into_consumer(bn, layer))
        layer_node.replace_input_with(bn_node, bn_node.args[0])
    reads_model_input = isinstance(bn_node.args[0], fx.Node) and bn_node.args[0].op == "placeholder"
    gm.graph.erase_node(bn_node)
    n = bn.num_features
    return FoldedBN(
        bn=bn_node.target,
        into=layer_node.target,
        direction=direction,
        num_features=n,
        mean=bn.running_mean.double().tolist(),
        var=bn.running_var.double().tolist(),
        gamma=bn.weight.double().tolist() if bn.affine else [1.0] * n,
        beta=bn.bias.double().tolist() if bn.affine else [0.0] * n,
        eps=float(bn.eps),
        reads_model_input=reads_model_input,
    )


def _left_in_place(gm: fx.GraphModule) -> list[LeftBN]:
    left: dict[str, LeftBN] = {}
    for node in gm.graph.nodes:
        if isinstance(_module(gm, node), _BatchNorm) and node.target not in left:
            reason = _bn_obstacle(gm, node) or (
                f"backward: {_backward_obstacle(gm, node)}; forward: {_forward_obstacle(gm, node)}"
            )
            left[node.target] = LeftBN(node.target, reason)
    for name, module in gm.named_modules():
        if isinstance(module, _BatchNorm) and name not in left:
            left[name] = LeftBN(name, "its attributes are read directly, not called as a layer")
    return list(left.values())


def _bn_obstacle(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """Why this BN cannot fold at all, whichever its neighbours."""
    bn = gm.get_submodule(node.target)
    if type(bn) not in _BN_TYPES:
        return f"{type(bn).__name__} is a BatchNorm subclass whose forward may differ"
    uses = _uses(gm, node.target)
    if uses > 1:
        return f"the BN module is used at {uses} places in the graph: one fold cannot serve all"
    return None


def _backward_obstacle(gm: fx.GraphModule, node: fx.Node) -> str | None:
    src = _bn_input(node)
    producer = _module(gm, src) if src is not None else None
    if type(producer) not in _PRODUCERS:
        return "its input is not the output of a Linear/Conv/ConvTranspose"
    label = _label(producer, src.target)
    if len(src.users) > 1:
        return f"{label} output has {len(src.users)} consumers: folding would change the others"
    bn = gm.get_submodule(node.target)
    channels = producer.out_features if isinstance(producer, nn.Linear) else producer.out_channels
    return _neighbour_obstacle(gm, src.target, producer, label, channels, bn, node)


def _forward_obstacle(gm: fx.GraphModule, node: fx.Node) -> str | None:
    if _bn_input(node) is None:
        return "the BN is not called with its input as the only argument"
    if len(node.users) != 1:
        return f"its output has {len(node.users)} consumers"
    user = next(iter(node.users))
    consumer = _module(gm, user)
    if isinstance(consumer, _CONV_TRANSPOSES):
        return (
            f"{_label(consumer, user.target)} is a ConvTranspose: a constant input shift does not "
            "give a constant output shift at its borders"
        )
    if type(consumer) not in _CONSUMERS:
        return "it does not feed a Linear/Conv"
    label = _label(consumer, user.target)
    if user.args != (node,) or user.kwargs:
        return f"{label} is not called with the BN output as its only argument"
    if isinstance(consumer, _CONVS) and (padding := _zero_padding(consumer)) is not None:
        return (
            f"{label} has padding {padding}: folding forward would not be exact, "
            "since the zeros it pads would not be shifted"
        )
    bn = gm.get_submodule(node.target)
    channels = consumer.in_features if isinstance(consumer, nn.Linear) else consumer.in_channels
    return _neighbour_obstacle(gm, user.target, consumer, label, channels, bn, node)


def _neighbour_obstacle(
    gm: fx.GraphModule,
    name: str,
    layer: Layer,
    label: str,
    channels: int,
    bn: _BatchNorm,
    bn_node: fx.Node,
) -> str | None:
    """Checks shared by both directions: the layer is used once and its channels are the BN's."""
    uses = _uses(gm, name)
    if uses > 1:
        return f"{label} is used at {uses} places in the graph"
    if channels != bn.num_features:
        return f"{label} has {channels} channels where the BN has {bn.num_features}"
    meta = bn_node.meta.get("tensor_meta")
    rank = len(meta.shape) if meta is not None and hasattr(meta, "shape") else None
    if isinstance(layer, nn.Linear):
        if rank is None and not isinstance(bn, nn.BatchNorm1d):
            return f"{label} mixes the last axis but {type(bn).__name__} normalizes axis 1"
        if rank not in (None, 2):
            return (
                f"{label} mixes the last axis but the BN normalizes axis 1 of a rank-{rank} input"
            )
    elif rank not in (None, layer.weight.dim()):
        return f"{label} sees an unbatched input, whose channel axis is not the BN's axis 1"
    return None


def _zero_padding(conv: nn.modules.conv._ConvNd) -> object | None:
    """The padding of ``conv`` if it pads zeros, else None."""
    # Reflect/replicate/circular padding copies input values, which shift along with the input.
    if conv.padding_mode != "zeros" or conv.padding == "valid":
        return None
    if conv.padding == "same":
        needed = any(d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True))
        return "'same'" if needed else None
    if not any(conv.padding):
        return None
    return conv.padding[0] if len(set(conv.padding)) == 1 else conv.padding


def _bn_input(node: fx.Node) -> fx.Node | None:
    if len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node):
        return node.args[0]
    return None


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _uses(gm: fx.GraphModule, name: str) -> int:
    """How many graph nodes call the module ``name`` or read one of its attributes."""
    return sum(
        1
        for n in gm.graph.nodes
        if (n.op == "call_module" and n.target == name)
        or (n.op == "get_attr" and (n.target == name or n.target.startswith(name + ".")))
    )


def _label(layer: nn.Module, name: str) -> str:
    if isinstance(layer, nn.Linear):
        return f"linear '{name}'"
    kind = "conv-transpose" if isinstance(layer, _CONV_TRANSPOSES) else "conv"
    return f"{kind} '{name}'"
