"""The lab's networks: Ioffe & Szegedy's Figure 1 MLP scaled to digits, and Santurkar's noisy BN.

Both are the project's `build_mlp`; the noisy variant inserts `ShiftNoise` after every BN.
"""

from __future__ import annotations

import torch
from torch import nn

from foldserve.training.models import build_mlp

# Figure 1 of Ioffe & Szegedy (2015): three hidden layers of 100 sigmoid units.
FIGURE1_HIDDEN = (100, 100, 100)
KINDS = ("plain", "plain-glorot", "bn", "noisy-bn")
LABELS = {
    "plain": "without BN",
    "plain-glorot": "without BN, Glorot init",
    "bn": "with BN",
    "noisy-bn": "BN + noise",
}
# Santurkar et al. (2018) inject noise of "non-zero mean and non-unit variance" whose parameters
# change every step; ours shifts each unit by up to ±1 and scales it by 1/2..2 (log-uniform).
NOISE_SHIFT = 1.0
NOISE_LOG_SCALE = float(torch.log(torch.tensor(2.0)))


class ShiftNoise(nn.Module):
    """A random per-unit shift and scale, drawn afresh on every training forward pass.

    After a BN it makes the distribution the next layer sees move from step to step (a severe,
    non-stationary covariate shift); in eval mode it is the identity.
    """

    def __init__(self, num_features: int, generator: torch.Generator) -> None:
        super().__init__()
        self.num_features = num_features
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        shape = (1, self.num_features)
        shift = (torch.rand(shape, generator=self.generator) * 2 - 1) * NOISE_SHIFT
        log_scale = (torch.rand(shape, generator=self.generator) * 2 - 1) * NOISE_LOG_SCALE
        return x * log_scale.exp() + shift


def figure1_mlp(
    kind: str, seed: int, num_features: int = 64, num_classes: int = 10
) -> nn.Sequential:
    """The sigmoid MLP: `plain` (no BN), `plain-glorot`, `bn` (BN before each sigmoid), `noisy-bn`.

    Every kind starts from torch's default initialization (uniform, ±1/√fan-in), drawn from
    torch's generator (seed it first), except `plain-glorot`, which redraws the Linear weights
    with Glorot's normal initialization and zero biases: a plain network given the start that
    suits sigmoids, so that BN is not credited with merely fixing a poor initial scale. The noise
    has its own generator, seeded with `seed`, so adding noise does not change the weights.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    model = build_mlp(
        num_features,
        num_classes,
        FIGURE1_HIDDEN,
        input_bn=False,
        dropout=0.0,
        hidden_bn=kind.endswith("bn"),
        activation=nn.Sigmoid,
    )
    if kind == "plain-glorot":
        for layer in model:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)
    if kind != "noisy-bn":
        return model
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for layer in model:
        layers.append(layer)
        if isinstance(layer, nn.BatchNorm1d):
            layers.append(ShiftNoise(layer.num_features, generator))
    return nn.Sequential(*layers)


def production_mlp(hidden_bn: bool, dropout: float, input_bn: bool = False) -> nn.Sequential:
    """The project's default digits MLP (ReLU, 512-256), with or without its BNs and dropout."""
    return build_mlp(64, 10, input_bn=input_bn, dropout=dropout, hidden_bn=hidden_bn)
