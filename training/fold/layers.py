"""Fold one eval-mode BatchNorm into one Linear/Conv/ConvTranspose module (a new copy).

The arithmetic is `training.fold.arithmetic`; these wrappers check eval mode, read the BN's
statistics, and return a copy of the layer with new parameters (as torch's own
`torch.nn.utils.fusion` does).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from foldserve.training.fold import arithmetic
from foldserve.training.fold.report import FoldError

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Exact types, not isinstance: a subclass may transform its weight in forward (weight
# standardization, say).
PRODUCERS = (nn.Linear, *CONVS, *CONV_TRANSPOSES)
CONSUMERS = (nn.Linear, *CONVS)

Layer = nn.Linear | nn.modules.conv._ConvNd


def fold_bn_into_producer(layer: Layer, bn: _BatchNorm) -> Layer:
    """Return a copy of ``layer`` that also applies ``bn`` to its output (backward fold).

    Both must be in eval mode; ``layer`` is a Linear, Conv or ConvTranspose.
    """
    scale, shift = _scale_shift(layer, bn)
    weight, bias = arithmetic.fold_backward(
        layer.weight,
        layer.bias,
        scale,
        shift,
        groups=getattr(layer, "groups", 1),
        transposed=isinstance(layer, CONV_TRANSPOSES),
    )
    return _with_params(layer, weight, bias)


def fold_bn_into_consumer(bn: _BatchNorm, layer: Layer) -> Layer:
    """Return a copy of ``layer`` that first applies ``bn`` to its input (forward fold).

    Both must be in eval mode; ``layer`` is a Linear or Conv. For a Conv the result is exact only
    if the conv pads no zeros; `fold_batchnorm` checks that, this function does not.
    """
    if isinstance(layer, CONV_TRANSPOSES):
        raise ValueError("a BN cannot fold forward into a ConvTranspose")
    scale, shift = _scale_shift(layer, bn)
    weight, bias = arithmetic.fold_forward(
        layer.weight, layer.bias, scale, shift, groups=getattr(layer, "groups", 1)
    )
    return _with_params(layer, weight, bias)


def _scale_shift(layer: Layer, bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    if layer.training or bn.training:
        raise ValueError("BN folding is only for eval mode: call .eval() on both modules")
    if bn.running_mean is None or bn.running_var is None:
        raise FoldError("a BN without running statistics cannot be folded")
    return arithmetic.bn_scale_shift(bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)


def _with_params(layer: Layer, weight: torch.Tensor, bias: torch.Tensor) -> Layer:
    folded = copy.deepcopy(layer)
    # New Parameter objects, never in-place edits: a weight tied to another module stays intact.
    folded.weight = nn.Parameter(weight, layer.weight.requires_grad)
    folded.bias = nn.Parameter(bias, layer.weight.requires_grad)
    return folded
