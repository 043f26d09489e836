"""Taps: extra outputs of the exported graph showing each folded BN layer's pre-activation.

Folding removes the BN layers, not the tensors they saw: a BN folded backward into its producer
is the producer's output now, one folded forward into its consumer reads the consumer's input.
`tapped_module` makes the folded network return, beside its logits, each of those tensors
(`foldserve.contract.shift`: `[batch, channels]`, a conv's averaged over space) and all of them
end to end, and `reference_taps` computes the same from the *unfolded* network's BNs, to check
the file against. A BN that read the model input is not tapped: the shift monitor reads the
input itself.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from foldserve.contract import BACKWARD, BN_INPUT, BN_OUTPUT, BNStats, Tap, tap_name
from foldserve.training.fold import FoldResult


def moments(x: torch.Tensor) -> torch.Tensor:
    """`[batch, channels]`: the values, averaged over any spatial axes.

    As few graph nodes as it takes (none for a vector, one ReduceMean for a conv): onnxruntime
    pays per node, on every call that fetches the taps.
    """
    return x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x


def tapped_module(
    folded: FoldResult, example: torch.Tensor
) -> tuple[fx.GraphModule, tuple[Tap, ...]]:
    """A copy of the folded network that returns `(logits, *taps, all taps end to end)`, and the
    taps' records.

    Args:
        folded: the fold's result; its `bn_stats` say where each BN went.
        example: one input batch, to learn each tapped tensor's rank.
    """
    gm = copy.deepcopy(folded.module)
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    graph = gm.graph
    calls = {node.target: node for node in graph.nodes if node.op == "call_module"}
    output = next(node for node in graph.nodes if node.op == "output")
    taps: list[Tap] = []
    tensors: list[fx.Node] = []
    for stats in folded.bn_stats:
        if stats.reads_model_input:  # the monitor reads the model input itself
            continue
        layer = calls[stats.folded_into]
        if stats.direction == BACKWARD:  # the producer's output is what the BN produced
            source, side = layer, BN_OUTPUT
        else:  # the consumer reads what the BN read
            source, side = layer.args[0], BN_INPUT
        spatial = len(source.meta["tensor_meta"].shape) > 2
        with graph.inserting_before(output):
            tensors.append(graph.call_function(moments, (source,)))
        taps.append(Tap(stats.layer, tap_name(stats.layer), side, spatial, moments=1))
    if tensors:  # a network with no folded BN has no taps at all
        with graph.inserting_before(output):
            tensors.append(graph.call_function(torch.cat, (list(tensors),), {"dim": 1}))
    output.args = ((output.args[0], *tensors),)
    graph.lint()
    gm.recompile()
    return gm, tuple(taps)


class WithProbabilities(nn.Module):
    """`(logits, probabilities, *taps, all taps)` of a tapped network: the graph's outputs."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, *taps = self.network(x)
        return (logits, torch.softmax(logits, dim=1), *taps)


@torch.no_grad()
def reference_taps(
    model: nn.Module, bn_stats: tuple[BNStats, ...], taps: tuple[Tap, ...], inputs: np.ndarray
) -> dict[str, np.ndarray]:
    """Each tap's moments as the *unfolded* network's BNs see them (eval mode), by tap name."""
    modules = dict(model.named_modules())
    seen: dict[str, np.ndarray] = {}
    handles = []
    for tap in taps:

        def hook(module, args, result, tap=tap) -> None:
            tensor = result if tap.side == BN_OUTPUT else args[0]
            seen[tap.name] = moments(tensor).numpy()

        handles.append(modules[tap.layer].register_forward_hook(hook))
    try:
        model.eval()(torch.from_numpy(inputs))
    finally:
        for handle in handles:
            handle.remove()
    missing = [tap.layer for tap in taps if tap.name not in seen]
    if missing or len([s for s in bn_stats if not s.reads_model_input]) != len(taps):
        raise ValueError(f"BN layers not called by the unfolded network: {missing}")
    return seen
