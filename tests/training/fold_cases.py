"""The graphs `foldserve fold` is tested and benchmarked on, with what must happen to each:
how many BatchNormalization nodes it has before and after, or the error it must end with.

`tests/training/test_onnx_fold_graphs.py` checks each case; `bench/onnx_fold.py` prints their
figures (BN counts, error, onnxruntime batch-1 time before and after).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from foldserve.training.models import build_cnn, build_mlp
from tests.training import onnx_graphs, torch_graphs
from tests.training.torch_graphs import DYNAMO, DYNAMO_OPTIMIZED, LEGACY


@dataclass(frozen=True)
class FoldCase:
    """One graph: how to write it, and the expected BN counts (``after`` None: an error)."""

    name: str
    source: str  # who built it, as the table says
    write: Callable[[Path], Path]
    before: int
    after: int | None
    left: str = ""  # a phrase every left BN's reason contains
    error: str = ""  # for after=None: a phrase of the error
    # The dynamo exporter takes seconds per graph: the tests run one such case, the bench all.
    bench_only: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} ({self.source})"


def _helper(build: Callable[[], onnx.ModelProto]) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        onnx.save(build(), str(path))
        return path

    return write


def _torch(build: Callable[[], torch.nn.Module], shape: tuple[int, ...], exporter: str):
    def write(path: Path) -> Path:
        return torch_graphs.export(build(), torch.randn(2, *shape), path, exporter)

    return write


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)  # the digits MLP's architecture: input BN, 64 → 512 → 256 → 10
    return torch_graphs.randomize_bn(build_mlp(64, 10))


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)  # the digits CNN: input BN, two conv blocks, pool, Linear-BN head
    return torch_graphs.randomize_bn(build_cnn((1, 8, 8), 10))


def _copy(path_of: Callable[[], Path]) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        path.write_bytes(path_of().read_bytes())
        return path

    return write


def _node_case(name: str) -> Callable[[Path], Path]:
    return _helper(lambda: onnx_graphs.onnx_backend_batchnorm_cases()[name])


def _pytorch_converted(name: str) -> Callable[[], Path]:
    return lambda: next(
        p for p in onnx_graphs.pytorch_converted_batchnorm_files() if p.parent.name == name
    )


STATISTICS_FED = "its scale 's' is not a constant"
NOT_RUN = "Could not find an implementation for BatchNormalization(6)"
T = "torch legacy"  # dynamo=False, do_constant_folding=False, TrainingMode.PRESERVE
D, DO = "torch dynamo", "torch dynamo, optimized"
CASES = [
    FoldCase("digits MLP", T, _torch(_mlp, (64,), LEGACY), 3, 0),
    FoldCase("digits MLP", D, _torch(_mlp, (64,), DYNAMO), 3, 0, bench_only=True),
    FoldCase("digits MLP", DO, _torch(_mlp, (64,), DYNAMO_OPTIMIZED), 1, 0, bench_only=True),
    FoldCase("digits CNN", T, _torch(_cnn, (1, 8, 8), LEGACY), 4, 0),
    FoldCase("digits CNN", D, _torch(_cnn, (1, 8, 8), DYNAMO), 4, 0),
    FoldCase("Dense (MatMul+Add+BN)", "onnx.helper, tf2onnx shapes",
             _helper(onnx_graphs.tf2onnx_dense), 3, 0),
    FoldCase("NHWC CNN (Transposes around Conv)", "onnx.helper, tf2onnx shapes",
             _helper(onnx_graphs.tf2onnx_nhwc_conv), 3, 0),
    FoldCase("ResNet basic blocks", T, _torch(torch_graphs.resnet_block, (3, 16, 16), LEGACY),
             6, 0),
    FoldCase("ResNet basic blocks", D, _torch(torch_graphs.resnet_block, (3, 16, 16), DYNAMO),
             6, 0, bench_only=True),
    FoldCase("pre-activation block", T, _torch(torch_graphs.preact_block, (3, 8, 8), LEGACY),
             2, 1, left="has 2 readers"),
    FoldCase("depthwise-separable", T,
             _torch(torch_graphs.depthwise_separable, (3, 16, 16), LEGACY), 5, 0),
    FoldCase("depthwise-separable", D,
             _torch(torch_graphs.depthwise_separable, (3, 16, 16), DYNAMO), 5, 0,
             bench_only=True),
    FoldCase("ConvTranspose decoder", T,
             _torch(torch_graphs.conv_transpose_decoder, (8, 5, 5), LEGACY), 3, 1,
             left="a constant input shift does not give a constant output shift"),
    FoldCase("ConvTranspose decoder", D,
             _torch(torch_graphs.conv_transpose_decoder, (8, 5, 5), DYNAMO), 3, 1,
             left="a constant input shift does not give a constant output shift",
             bench_only=True),
    *(
        FoldCase(name, "onnx backend node test", _node_case(name), 1, 1, left=reason)
        for name, reason in [
            ("test_batchnorm_example", STATISTICS_FED),
            ("test_batchnorm_epsilon", STATISTICS_FED),
            ("test_batchnorm_example_training_mode", "training_mode=1"),
            ("test_batchnorm_epsilon_training_mode", "training_mode=1"),
        ]
    ),
    FoldCase("test_BatchNorm2d_eval", "onnx backend pytorch-converted (opset 6)",
             _copy(_pytorch_converted("test_BatchNorm2d_eval")), 1, None, error=NOT_RUN),
]  # fmt: skip
