"""Re-estimate every folded BN's statistics on a sample, layer by layer, and re-fold them.

The layers are visited in graph order; a layer's forward-folded BNs (its input side) before its
backward-folded ones. Each BN's input is computed by running the graph *as adapted so far* on the
sample (the tensor made a graph output), and undoing the folded maps between that tensor and the
BN's input: so every BN sees inputs already passed through the adapted earlier layers, as if the
unfolded network had re-estimated its statistics in order (AdaBN). Its new statistics then
replace the old in the folded weights (`refold`), and the next BN is visited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from foldserve.contract import BNStats
from foldserve.core.adapt.onnx_file import OnnxFile
from foldserve.core.adapt.refold import (
    ChannelMap,
    chain,
    channel_moments,
    identity_where,
    scale_inputs,
    scale_outputs,
)
from foldserve.core.adapt.sites import Layer
from foldserve.runtime import ort

CHUNK = 512  # examples per run: bounds the memory a conv's activations take


@dataclass
class Corrections:
    """What adaptation did to one layer, as explicit maps (the verification rebuilds it so).

    Attributes:
        layer: the layer.
        input_fix: applied to its input before the old weights (None: untouched).
        output_fix: applied to its output after them (None: untouched).
        ranks: the rank of its input and output tensors, as run.
    """

    layer: Layer
    input_fix: ChannelMap | None = None
    output_fix: ChannelMap | None = None
    ranks: dict[str, int] = field(default_factory=dict)


def session(data: bytes) -> ort.InferenceSession:
    """A session of the graph `data` on one thread: off the request path, it must not take the
    cores the calls run on."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_graph(
    graph: bytes | ort.InferenceSession, input_name: str, inputs: np.ndarray, outputs: Sequence[str]
) -> list[np.ndarray]:
    """`outputs` of a graph (its bytes, or a `session` of it) on `inputs`, in chunks."""
    runner = session(graph) if isinstance(graph, bytes) else graph
    parts = [
        runner.run(list(outputs), {input_name: inputs[start : start + CHUNK]})
        for start in range(0, len(inputs), CHUNK)
    ]
    return [np.concatenate([part[i] for part in parts]) for i in range(len(outputs))]


def re_estimate(
    graph: OnnxFile,
    layers: Sequence[Layer],
    bn_stats: Sequence[BNStats],
    input_name: str,
    inputs: np.ndarray,
) -> tuple[list[BNStats], list[Corrections]]:
    """Adapt `graph` in place; the new statistics (in `bn_stats`' order) and what changed."""
    stats = list(bn_stats)
    done = []
    for layer in layers:
        fixes = Corrections(layer)
        for k in reversed(range(len(layer.forward))):  # the BN farthest from the layer first
            values = _values(graph, layer.input, input_name, inputs, fixes)
            fix = _forward(stats, layer.forward, k, values)
            _fold(graph, layer, fix, inputs_side=True)
            fixes.input_fix = fix if fixes.input_fix is None else chain([fix, fixes.input_fix])
        for k in range(len(layer.backward)):  # the BN next to the layer first
            values = _values(graph, layer.output, input_name, inputs, fixes)
            fix = _backward(stats, layer.backward, k, values)
            _fold(graph, layer, fix, inputs_side=False)
            fixes.output_fix = fix if fixes.output_fix is None else chain([fixes.output_fix, fix])
        done.append(fixes)
    return stats, done


def _values(
    graph: OnnxFile, name: str, input_name: str, inputs: np.ndarray, fixes: Corrections
) -> np.ndarray:
    probe = graph.copy()
    probe.add_outputs([name], graph.elem_type(fixes.layer.weight))
    (values,) = run_graph(probe.to_bytes(), input_name, inputs, [name])
    fixes.ranks[name] = values.ndim
    return values.astype(np.float64)


def _forward(stats: list[BNStats], chain_of: list[int], k: int, values: np.ndarray) -> ChannelMap:
    """BN `chain_of[k]` of a layer's input side: `values` are the layer's input, which the BNs
    folded after it (farther from the layer) map to its input first."""
    maps = [ChannelMap.of_bn(stats[i]) for i in chain_of]
    before = chain([maps[i] for i in reversed(range(k + 1, len(maps)))] or [_identity(maps[k])])
    new = _new_stats(stats, chain_of[k], before(values), before.cut | maps[k].cut)
    fix = chain([before, ChannelMap.of_bn(new), maps[k].inverse(), before.inverse()])
    return identity_where(fix, before.cut | maps[k].cut)


def _backward(stats: list[BNStats], chain_of: list[int], k: int, values: np.ndarray) -> ChannelMap:
    """BN `chain_of[k]` of a layer's output side: `values` are the layer's output, what this BN
    and the ones folded after it (farther from the layer) produced."""
    maps = [ChannelMap.of_bn(stats[i]) for i in chain_of]
    tail = chain(maps[k:])
    new = _new_stats(stats, chain_of[k], tail.inverse()(values), tail.cut)
    fix = chain([tail.inverse(), ChannelMap.of_bn(new), *maps[k + 1 :]])
    return identity_where(fix, tail.cut)


def _new_stats(stats: list[BNStats], index: int, seen: np.ndarray, keep: np.ndarray) -> BNStats:
    """Record BN `index`'s statistics on `seen`, its input (channels in `keep`: unchanged)."""
    mean, var = channel_moments(seen)
    old = stats[index]
    mean = np.where(keep, old.mean, mean)
    var = np.where(keep, old.var, var)
    stats[index] = replace(old, mean=tuple(mean.tolist()), var=tuple(var.tolist()))
    return stats[index]


def _identity(like: ChannelMap) -> ChannelMap:
    return ChannelMap(np.ones_like(like.scale), np.zeros_like(like.shift))


def _fold(graph: OnnxFile, layer: Layer, fix: ChannelMap, *, inputs_side: bool) -> None:
    weight, bias = graph.initializer(layer.weight), graph.initializer(layer.bias)
    scale = scale_inputs if inputs_side else scale_outputs
    new_weight, new_bias = scale(
        layer.op, weight, bias, fix, trans_b=layer.trans_b, groups=layer.groups
    )
    graph.set_initializer(layer.weight, new_weight.astype(weight.dtype))
    graph.set_initializer(layer.bias, new_bias.astype(bias.dtype))
