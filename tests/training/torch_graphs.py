"""BatchNorm networks exported from torch with their BatchNormalization nodes kept, as a team that
trained elsewhere would hand them to `foldserve fold`.

- the legacy TorchScript exporter (`dynamo=False`) with `do_constant_folding=False` and
  `training=TrainingMode.PRESERVE`: an eval-mode network keeps its BNs (`training_mode=0`), where
  the default (`TrainingMode.EVAL` with constant folding) fuses Conv+BN itself;
- the dynamo exporter (onnxscript) with `optimize=False`, which keeps every BN; with its default
  `optimize=True` onnxscript fuses BN into a preceding Gemm/Conv and keeps the rest.

The networks: a ResNet-style residual block (post-activation, projection shortcut), a
pre-activation one (whose first BN cannot fold), a depthwise-separable block, and a decoder of
grouped ConvTranspose layers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

LEGACY, DYNAMO, DYNAMO_OPTIMIZED = "legacy", "dynamo", "dynamo-optimized"


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN statistics and affine parameters far from the identity (a fresh BN's
    mean 0 / var 1 / gamma 1 / beta 0 would hide a fold that forgot one of them)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 2)
            module.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.1)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return model.eval()


def export(
    model: nn.Module, example: torch.Tensor, path: Path, exporter: str = LEGACY, **names
) -> Path:
    """Export ``model`` (eval mode) with a dynamic batch axis, its BNs kept unless
    ``exporter`` is `DYNAMO_OPTIMIZED`."""
    inputs = names.get("input_names", ["input"])
    outputs = names.get("output_names", ["output"])
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        if exporter == LEGACY:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in (*inputs, *outputs)},
                opset_version=17,
                dynamo=False,
                do_constant_folding=False,
                training=torch.onnx.TrainingMode.PRESERVE,
            )
        else:
            program = torch.onnx.export(
                model,
                (example,),
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                optimize=exporter == DYNAMO_OPTIMIZED,
                verbose=False,
            )
            program.save(str(path))
    return path


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-BN-ReLU-conv-BN plus a (projected) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv twice; its first BN reads the block input, which the
    shortcut reads too, and feeds a ReLU: it cannot fold either way."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(torch.relu(self.bn1(x)))
        return x + self.conv2(torch.relu(self.bn2(y)))


def resnet_block() -> nn.Module:
    """Stem conv-BN-ReLU, a strided basic block with projection, a basic block, pool, Linear:
    6 BNs, all fold backward."""
    torch.manual_seed(0)
    return randomize_bn(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            BasicBlock(8, 16, stride=2),
            BasicBlock(16, 16),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10),
        )
    )


def preact_block() -> nn.Module:
    """A stem conv and a pre-activation block: 2 BNs; bn2 folds backward into conv1, bn1 is left
    (the stem's output feeds the shortcut too, and bn1 feeds a ReLU)."""
    torch.manual_seed(1)
    return randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), PreActBlock(8)))


def depthwise_separable() -> nn.Module:
    """MobileNet-style: input BN → unpadded depthwise conv (BN folds forward, per group), then
    depthwise 3×3 and pointwise 1×1 convs each followed by BN-ReLU: 5 BNs, all fold."""
    torch.manual_seed(2)
    return randomize_bn(
        nn.Sequential(
            nn.BatchNorm2d(3),
            nn.Conv2d(3, 6, 3, groups=3, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU6(),
            nn.Conv2d(6, 16, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU6(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU6(),
            nn.Conv2d(16, 24, 1, bias=False),
            nn.BatchNorm2d(24),
            nn.ReLU6(),
        )
    )


def conv_transpose_decoder() -> nn.Module:
    """Grouped ConvTranspose → BN twice (fold backward), then a BN before a ConvTranspose, which
    cannot fold forward (border outputs see fewer taps) and follows a ReLU: 3 BNs, 2 fold."""
    torch.manual_seed(3)
    return randomize_bn(
        nn.Sequential(
            nn.ConvTranspose2d(8, 12, 4, stride=2, padding=1, groups=2),
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.ConvTranspose2d(12, 6, 3, stride=1, padding=1, groups=3, bias=False),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.BatchNorm2d(6),
            nn.ConvTranspose2d(6, 3, 2, stride=2),
        )
    )
