"""Precise BatchNorm statistics: recompute each BN's mean and variance with the weights frozen.

The running averages lag behind weights that kept changing during training. After training, each
BN's statistics are replaced by the exact mean and variance of its inputs over the training set,
layer by layer in forward order, so every BN sees inputs normalized by the recomputed layers before
it.

With several training workers each runs the pass over its own part of the training set and the
per-channel sums are all-reduced before the moments are taken, so every worker, and the model
rank 0 exports, gets the statistics of the whole set, not of one worker's part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from foldserve.training.batchnorm import BN_TYPES


@dataclass(frozen=True)
class BNChange:
    """How far one BN's moving averages were from the recomputed statistics."""

    layer: str
    mean_shift_max: float  # max over channels of |old mean - new mean| / new std
    mean_shift_mean: float
    std_ratio_max: float  # max over channels of |log(old std / new std)|, as a ratio

    def as_dict(self) -> dict[str, float | str]:
        return {
            "layer": self.layer,
            "mean_shift_max_std": self.mean_shift_max,
            "mean_shift_mean_std": self.mean_shift_mean,
            "std_ratio_max": self.std_ratio_max,
        }


class _MomentAccumulator:
    """Per-channel sums of a BN's inputs, in float64, over every batch."""

    def __init__(self) -> None:
        self.count = 0
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().double()
        reduce_dims = [0, *range(2, x.dim())]
        total, total_sq = x.sum(dim=reduce_dims), (x * x).sum(dim=reduce_dims)
        self.count += x.numel() // x.shape[1]
        self.total = total if self.total is None else self.total + total
        self.total_sq = total_sq if self.total_sq is None else self.total_sq + total_sq

    def moments(
        self, bn: nn.Module, all_reduce: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (biased) variance per channel, over every worker's sums when `all_reduce`."""
        sums = torch.zeros(3, bn.num_features, dtype=torch.float64, device=bn.running_mean.device)
        if self.total is not None and self.total_sq is not None:
            sums[0], sums[1] = self.total, self.total_sq
        sums[2] = self.count
        if all_reduce is not None:
            all_reduce(sums)
        total, total_sq, count = sums[0], sums[1], sums[2]
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0.0)
        return mean, var


@torch.no_grad()
def recompute_bn_statistics(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[BNChange]:
    """Replace every BN's running mean/variance with its inputs' exact moments over `loader`.

    The model runs in eval mode throughout, so each pass normalizes with statistics already
    recomputed for the layers before the BN being measured.

    Args:
        model: the trained network (a plain module, not wrapped in DDP).
        loader: the training examples, in any order; with `all_reduce`, this worker's part.
        device: where the model runs.
        all_reduce: sums a tensor over every worker in place (`Workers.all_reduce_sum`), called
            once per BN, in the same order on every worker. None: `loader` is the whole set.

    Returns:
        One `BNChange` per BN, in forward order.
    """
    was_training = model.training
    model.eval()
    changes = []
    for name, bn in _batchnorms_in_forward_order(model, loader, device):
        accumulator = _MomentAccumulator()
        handle = bn.register_forward_pre_hook(accumulator)
        try:
            for features, _ in loader:
                model(features.to(device))
        finally:
            handle.remove()
        mean, var = accumulator.moments(bn, all_reduce)
        changes.append(_change(name, bn, mean, var))
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
    model.train(was_training)
    return changes


def _batchnorms_in_forward_order(
    model: nn.Module, loader: DataLoader, device: torch.device
) -> list[tuple[str, nn.Module]]:
    names = {module: name for name, module in model.named_modules()}
    order: list[tuple[str, nn.Module]] = []
    handles = [
        module.register_forward_pre_hook(
            lambda m, _: order.append((names[m], m)) if all(m is not o for _, o in order) else None
        )
        for module in names
        if isinstance(module, BN_TYPES) and module.track_running_stats
    ]
    try:
        features, _ = next(iter(loader))
        model(features[:2].to(device))
    finally:
        for handle in handles:
            handle.remove()
    return order


def _change(name: str, bn: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> BNChange:
    new_std = (var + bn.eps).sqrt()
    old_std = (bn.running_var.double() + bn.eps).sqrt()
    shift = (bn.running_mean.double() - mean).abs() / new_std
    ratio = (old_std / new_std).log().abs().exp()
    return BNChange(name, float(shift.max()), float(shift.mean()), float(ratio.max()))
