"""When a BatchNorm in a traced graph may fold, and why not: each check returns None when the
fold would be exact, else the reason (which the fold report carries)."""

from __future__ import annotations

from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from foldserve.training.batchnorm import BN_TYPES
from foldserve.training.fold.layers import CONSUMERS, CONV_TRANSPOSES, CONVS, PRODUCERS, Layer


def bn_obstacle(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """Why this BN cannot fold at all, whichever its neighbours."""
    bn = gm.get_submodule(node.target)
    if type(bn) not in BN_TYPES:
        return f"{type(bn).__name__} is a BatchNorm subclass whose forward may differ"
    count = uses(gm, node.target)
    if count > 1:
        return f"the BN module is used at {count} places in the graph: one fold cannot serve all"
    return None


def backward_obstacle(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """Why this BN cannot fold into the layer that produces its input."""
    src = bn_input(node)
    producer = module_of(gm, src) if src is not None else None
    if type(producer) not in PRODUCERS:
        return "its input is not the output of a Linear/Conv/ConvTranspose"
    label = _label(producer, src.target)
    if len(src.users) > 1:
        return f"{label} output has {len(src.users)} consumers: folding would change the others"
    bn = gm.get_submodule(node.target)
    channels = producer.out_features if isinstance(producer, nn.Linear) else producer.out_channels
    return _neighbour_obstacle(gm, src.target, producer, label, channels, bn, node)


def forward_obstacle(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """Why this BN cannot fold into the layer that consumes its output."""
    if bn_input(node) is None:
        return "the BN is not called with its input as the only argument"
    if len(node.users) != 1:
        return f"its output has {len(node.users)} consumers"
    user = next(iter(node.users))
    consumer = module_of(gm, user)
    if isinstance(consumer, CONV_TRANSPOSES):
        return (
            f"{_label(consumer, user.target)} is a ConvTranspose: a constant input shift does not "
            "give a constant output shift at its borders"
        )
    if type(consumer) not in CONSUMERS:
        return "it does not feed a Linear/Conv"
    label = _label(consumer, user.target)
    if user.args != (node,) or user.kwargs:
        return f"{label} is not called with the BN output as its only argument"
    if isinstance(consumer, CONVS) and (padding := _zero_padding(consumer)) is not None:
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
    count = uses(gm, name)
    if count > 1:
        return f"{label} is used at {count} places in the graph"
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


def bn_input(node: fx.Node) -> fx.Node | None:
    """The node a BN is applied to, when it is called with that one argument only."""
    if len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node):
        return node.args[0]
    return None


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a `call_module` node calls, else None."""
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def uses(gm: fx.GraphModule, name: str) -> int:
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
    kind = "conv-transpose" if isinstance(layer, CONV_TRANSPOSES) else "conv"
    return f"{kind} '{name}'"
