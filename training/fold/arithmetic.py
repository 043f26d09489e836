"""Pure tensor arithmetic for folding an eval-mode BatchNorm into a Linear/Conv layer.

In eval mode a BatchNorm is the per-channel affine map ``x * scale + shift`` with
``scale = gamma / sqrt(var + eps)`` and ``shift = beta - mean * scale``. Folding it *backward*
(BN after the layer) scales the layer's output channels; folding it *forward* (BN before the
layer) scales the layer's input channels and turns the shift into a bias. Everything is computed
in float64 and cast back to the layer's dtype, so the folded layer loses no more than one rounding.

Weight layouts: Linear ``[out, in]``, Conv ``[out, in/groups, *kernel]``, ConvTranspose
``[in, out/groups, *kernel]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bn_scale_shift", "fold_backward", "fold_forward"]


def bn_scale_shift(
    mean: Tensor, var: Tensor, eps: float, gamma: Tensor | None, beta: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift``, in float64.

    Args:
        mean: running mean, one value per channel.
        var: running variance, one value per channel.
        eps: the BN's epsilon.
        gamma: affine weight, or None for ``affine=False`` (gamma = 1).
        beta: affine bias, or None for ``affine=False`` (beta = 0).

    Returns:
        ``(scale, shift)``, float64 vectors with one value per channel.
    """
    scale = torch.rsqrt(var.detach().double() + eps)
    if gamma is not None:
        scale = scale * gamma.detach().double()
    shift = -mean.detach().double() * scale
    if beta is not None:
        shift = shift + beta.detach().double()
    return scale, shift


def fold_backward(
    weight: Tensor,
    bias: Tensor | None,
    scale: Tensor,
    shift: Tensor,
    *,
    groups: int = 1,
    transposed: bool = False,
) -> tuple[Tensor, Tensor]:
    """Fold ``y * scale + shift`` applied to the layer's output channels into the layer.

    ``W' = W * scale`` per output channel and ``b' = b * scale + shift``, which is
    ``(b - mean) * gamma / sqrt(var + eps) + beta``.

    Args:
        weight: the layer's weight (layouts in the module docstring).
        bias: the layer's bias, or None (a zero bias is assumed and a new one returned).
        scale: per output channel, from `bn_scale_shift`.
        shift: per output channel, from `bn_scale_shift`.
        groups: the conv's groups; only matters for ConvTranspose, whose output channels sit on
            axis 1 within each group.
        transposed: True for a ConvTranspose weight.

    Returns:
        ``(weight, bias)`` in ``weight``'s dtype.
    """
    w = weight.detach().double()
    out_channels = w.shape[1] * groups if transposed else w.shape[0]
    _check_channels(scale, out_channels, "output")
    # A ConvTranspose weight holds output channels on axis 1, within each group of axis-0 rows.
    factor = _per_group(scale, groups, w.shape[0]) if transposed else scale.view(-1, 1)
    factor = factor.reshape(factor.shape + (1,) * (w.dim() - 2))
    b = bias.detach().double() if bias is not None else torch.zeros_like(scale)
    return (w * factor).to(weight.dtype), (b * scale + shift).to(weight.dtype)


def fold_forward(
    weight: Tensor,
    bias: Tensor | None,
    scale: Tensor,
    shift: Tensor,
    *,
    groups: int = 1,
) -> tuple[Tensor, Tensor]:
    """Fold ``x * scale + shift`` applied to the layer's input channels into a Linear/Conv.

    ``W' = W * scale`` along the input-channel axis, and ``b' = b + W @ shift``; for a conv the
    shift meets every kernel tap, so it is weighted by W summed over the kernel. That is exact only
    when the conv pads nothing with zeros (a padded zero would not have been shifted); the caller
    checks. Not for ConvTranspose, where border outputs see fewer taps than inner ones.

    Args:
        weight: a Linear ``[out, in]`` or Conv ``[out, in/groups, *kernel]`` weight.
        bias: the layer's bias, or None (a zero bias is assumed and a new one returned).
        scale: per input channel, from `bn_scale_shift`.
        shift: per input channel, from `bn_scale_shift`.
        groups: the conv's groups: output channel ``o`` only sees the input channels of its group.

    Returns:
        ``(weight, bias)`` in ``weight``'s dtype.
    """
    w = weight.detach().double()
    out_channels, in_per_group = w.shape[:2]
    _check_channels(scale, in_per_group * groups, "input")
    s = _per_group(scale, groups, out_channels)
    t = _per_group(shift, groups, out_channels)
    b = bias.detach().double() if bias is not None else w.new_zeros(out_channels)
    kernel_sum = w.reshape(out_channels, in_per_group, -1).sum(-1)
    new_bias = b + (kernel_sum * t).sum(1)
    new_weight = w * s.reshape(s.shape + (1,) * (w.dim() - 2))
    return new_weight.to(weight.dtype), new_bias.to(weight.dtype)


def _per_group(values: Tensor, groups: int, rows: int) -> Tensor:
    """Spread per-channel ``values`` over a grouped weight's first two axes, ``[rows, n/groups]``.

    Row ``r`` of a grouped weight belongs to group ``r // (rows / groups)``, and column ``j`` of
    that row stands for channel ``group * (n / groups) + j`` of the other side of the layer.
    """
    per_group = values.numel() // groups
    spread = values.view(groups, 1, per_group).expand(groups, rows // groups, per_group)
    return spread.reshape(rows, per_group)


def _check_channels(values: Tensor, expected: int, side: str) -> None:
    if values.numel() != expected:
        raise ValueError(
            f"BN has {values.numel()} channels but the layer has {expected} {side} channels"
        )
