"""The arithmetic of folding an inference-mode BatchNormalization into a neighbour, in numpy.

The same maths as `training.fold.arithmetic` (torch), without torch. In inference mode a BN is
the per-channel affine map ``x * scale + shift`` with ``scale = gamma / sqrt(var + eps)`` and
``shift = beta - mean * scale``. Folding it *backward* (BN after the layer) scales the layer's
output channels; folding it *forward* (BN before the layer) scales the layer's input channels and
turns the shift into a bias. Everything is computed in float64 and cast back to the weight's dtype
by the caller, so a folded weight carries one rounding, not a chain of them.

Weights are in the layout ``[out, in/groups, *kernel]`` (ONNX Conv, Gemm with ``transB=1``);
ConvTranspose's ``[in, out/groups, *kernel]`` is handled with ``transposed=True``. A Gemm or
MatMul weight ``[in, out]`` is passed transposed (``W.T``), and the result transposed back.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bn_scale_shift", "fold_backward", "fold_forward"]


def bn_scale_shift(
    mean: np.ndarray, var: np.ndarray, eps: float, gamma: np.ndarray, beta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """An inference-mode BatchNormalization as ``x * scale + shift``, in float64.

    Args:
        mean, var, gamma, beta: one value per channel (ONNX inputs ``input_mean``,
            ``input_var``, ``scale``, ``B``).
        eps: the node's ``epsilon``.

    Returns:
        ``(scale, shift)``, float64 vectors with one value per channel.
    """
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + float(eps))
    shift = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
    return scale, shift


def fold_backward(
    weight: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    shift: np.ndarray,
    *,
    groups: int = 1,
    transposed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``y * scale + shift``, applied to a layer's output channels, into the layer.

    ``W' = W * scale`` per output channel and ``b' = b * scale + shift``.

    Args:
        weight: ``[out, in/groups, *kernel]``, or ConvTranspose's ``[in, out/groups, *kernel]``.
        bias: the layer's bias (any shape that broadcasts against ``[..., out]``: a Gemm's C may
            be ``[1, out]`` or ``[batch, out]``), or None for none.
        scale, shift: per output channel, from `bn_scale_shift`.
        groups: only matters for ConvTranspose, whose output channels sit on axis 1 within each
            group of rows.
        transposed: True for a ConvTranspose weight.

    Returns:
        ``(weight, bias)`` in float64.
    """
    w = np.asarray(weight, np.float64)
    out_channels = w.shape[1] * groups if transposed else w.shape[0]
    _check_channels(scale, out_channels, "output")
    factor = _per_group(scale, groups, w.shape[0]) if transposed else scale.reshape(-1, 1)
    factor = factor.reshape(factor.shape + (1,) * (w.ndim - 2))
    b = np.zeros_like(scale) if bias is None else np.asarray(bias, np.float64)
    return w * factor, b * scale + shift


def fold_forward(
    weight: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    shift: np.ndarray,
    *,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``x * scale + shift``, applied to a layer's input channels, into the layer.

    ``W' = W * scale`` along the input-channel axis and ``b' = b + W @ shift``; for a conv the
    shift meets every kernel tap, so it is weighted by W summed over the kernel. That is exact only
    when the conv pads no zeros (a padded zero would not have been shifted): the caller checks.
    Never for ConvTranspose, whose border outputs see fewer taps than inner ones.

    Args:
        weight: ``[out, in/groups, *kernel]``.
        bias: as for `fold_backward`, or None.
        scale, shift: per input channel, from `bn_scale_shift`.
        groups: output channel ``o`` only sees the input channels of its group.

    Returns:
        ``(weight, bias)`` in float64.
    """
    w = np.asarray(weight, np.float64)
    out_channels, in_per_group = w.shape[:2]
    _check_channels(scale, in_per_group * groups, "input")
    s = _per_group(scale, groups, out_channels)
    t = _per_group(shift, groups, out_channels)
    b = np.zeros(out_channels) if bias is None else np.asarray(bias, np.float64)
    kernel_sum = w.reshape(out_channels, in_per_group, -1).sum(-1)
    new_bias = b + (kernel_sum * t).sum(1)
    return w * s.reshape(s.shape + (1,) * (w.ndim - 2)), new_bias


def _per_group(values: np.ndarray, groups: int, rows: int) -> np.ndarray:
    """Spread per-channel ``values`` over a grouped weight's first two axes, ``[rows, n/groups]``.

    Row ``r`` of a grouped weight belongs to group ``r // (rows / groups)``, and column ``j`` of
    that row stands for channel ``group * (n / groups) + j`` of the other side of the layer.
    """
    per_group = values.size // groups
    spread = np.broadcast_to(
        values.reshape(groups, 1, per_group), (groups, rows // groups, per_group)
    )
    return spread.reshape(rows, per_group)


def _check_channels(values: np.ndarray, expected: int, side: str) -> None:
    if values.size != expected:
        raise ValueError(
            f"BN has {values.size} channels but the layer has {expected} {side} channels"
        )
