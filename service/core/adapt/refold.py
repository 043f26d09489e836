"""The arithmetic of re-folding a BatchNorm with new statistics, in float64 numpy.

A folded BN is the per-channel affine map ``x * scale + shift``, ``scale = γ/√(var+ε)``,
``shift = β − mean · scale`` (`ChannelMap.of_bn`), multiplied into its neighbour's weights. Its
unfolded form is never needed: swapping the old map for one with new statistics is itself a
per-channel affine map on the folded layer's output (a BN folded *backward*) or input (folded
*forward*), the *correction*, and a correction folds into the weights like a BN does:

- on the output: ``W' = W · r`` per output channel, ``b' = b · r + d``;
- on the input: ``W' = W · r`` per input channel, ``b' = b + W · s`` (a conv's W summed over
  its kernel: the shift meets every tap).

Weights come in the node's own layout (`scale_outputs`, `scale_inputs` take the ONNX op type):
Conv ``[out, in/groups, *kernel]``, ConvTranspose ``[in, out/groups, *kernel]``, Gemm ``[in, out]``
(``[out, in]`` with ``transB``), MatMul ``[in, out]``. A channel whose map has scale 0 (γ = 0) is
cut off from what comes before it: its correction is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foldserve.contract import BNStats


@dataclass(frozen=True)
class ChannelMap:
    """``x ↦ x · scale + shift``, per channel (float64 vectors)."""

    scale: np.ndarray
    shift: np.ndarray

    @classmethod
    def of_bn(cls, stats: BNStats, mean: np.ndarray | None = None, var=None) -> ChannelMap:
        """The inference-mode BN `stats` describes, with `mean`/`var` in place of its own."""
        mean = np.asarray(stats.mean if mean is None else mean, np.float64)
        var = np.asarray(stats.var if var is None else var, np.float64)
        scale = np.asarray(stats.gamma, np.float64) / np.sqrt(var + stats.eps)
        return cls(scale, np.asarray(stats.beta, np.float64) - mean * scale)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Apply to `[N, channels, ...]` values."""
        shape = (1, -1) + (1,) * (values.ndim - 2)
        return values * self.scale.reshape(shape) + self.shift.reshape(shape)

    def inverse(self) -> ChannelMap:
        """The inverse map; a channel of scale 0 maps to 0 (callers mask those, `cut`)."""
        safe = np.where(self.cut, 1.0, self.scale)
        return ChannelMap(
            np.where(self.cut, 0.0, 1.0 / safe), np.where(self.cut, 0.0, -self.shift / safe)
        )

    @property
    def cut(self) -> np.ndarray:
        """The channels whose output does not depend on their input (scale 0)."""
        return self.scale == 0


def chain(maps: Sequence[ChannelMap]) -> ChannelMap:
    """The maps applied one after another, the first first."""
    scale, shift = np.ones_like(maps[0].scale), np.zeros_like(maps[0].shift)
    for step in maps:
        scale, shift = scale * step.scale, shift * step.scale + step.shift
    return ChannelMap(scale, shift)


def identity_where(correction: ChannelMap, mask: np.ndarray) -> ChannelMap:
    """The correction, with the channels of `mask` left as they are."""
    return ChannelMap(np.where(mask, 1.0, correction.scale), np.where(mask, 0.0, correction.shift))


def channel_moments(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (unbiased) variance of `[N, channels, ...]` values, over the examples
    and any spatial axes: what a BN's running statistics estimate."""
    flat = np.moveaxis(np.asarray(values, np.float64), 1, -1).reshape(-1, values.shape[1])
    return flat.mean(axis=0), flat.var(axis=0, ddof=1 if len(flat) > 1 else 0)


def scale_outputs(
    op: str, weight: np.ndarray, bias: np.ndarray, fix: ChannelMap, *, trans_b: int, groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold the correction `fix` of a layer's output channels into its weight and bias."""
    w = np.asarray(weight, np.float64)
    r, d = fix.scale, fix.shift
    if op == "ConvTranspose":
        factor = _per_group(r, groups, w.shape[0])
    elif op == "Conv" or (op == "Gemm" and trans_b):
        factor = r.reshape(-1, 1)
    else:  # Gemm [in, out], MatMul [in, out]
        factor = r.reshape(1, -1)
    factor = factor.reshape(factor.shape + (1,) * (w.ndim - 2))
    return w * factor, np.asarray(bias, np.float64) * r + d


def scale_inputs(
    op: str, weight: np.ndarray, bias: np.ndarray, fix: ChannelMap, *, trans_b: int, groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold the correction `fix` of a layer's input channels into its weight and bias."""
    w = np.asarray(weight, np.float64)
    if op in ("Gemm", "MatMul"):
        matrix = w if (op == "Gemm" and trans_b) else w.T  # [out, in]
        shifted = np.asarray(bias, np.float64) + matrix @ fix.shift
        matrix = matrix * fix.scale.reshape(1, -1)
        return (matrix if (op == "Gemm" and trans_b) else matrix.T), shifted
    if op != "Conv":
        raise ValueError(f"a BN folded forward into {op}: only Conv, Gemm and MatMul take one")
    out_channels = w.shape[0]
    r = _per_group(fix.scale, groups, out_channels)
    s = _per_group(fix.shift, groups, out_channels)
    kernel_sum = w.reshape(out_channels, w.shape[1], -1).sum(-1)
    shifted = np.asarray(bias, np.float64) + (kernel_sum * s).sum(1)
    return w * r.reshape(r.shape + (1,) * (w.ndim - 2)), shifted


def _per_group(values: np.ndarray, groups: int, rows: int) -> np.ndarray:
    """Per-channel `values` spread over a grouped weight's first two axes, `[rows, n/groups]`:
    row `r` belongs to group `r // (rows / groups)`, its column `j` to channel
    `group · (n / groups) + j` on the other side of the layer."""
    per_group = values.size // groups
    spread = np.broadcast_to(
        values.reshape(groups, 1, per_group), (groups, rows // groups, per_group)
    )
    return spread.reshape(rows, per_group)
