"""BN networks whose training distribution is known exactly, for the `foldserve adapt` tests.

Inputs are Gaussian with per-feature means and scales (`Population`); each network's BN
statistics are the population moments of its BNs' inputs (measured in float64 on a large draw,
as precise BN would), so a sample of the same population must give them back within sampling
error. The graphs have BatchNormalization nodes and are folded by `foldserve fold`'s code, so the
files record their BNs as any graph-level fold does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from foldserve.training.onnx_fold.fold import fold_file

EPS = 1e-5
POPULATION = 200_000  # draws the "training" statistics are measured on


@dataclass(frozen=True)
class Population:
    """x = mean + scale · N(0, 1), per feature, in the model's example shape."""

    mean: np.ndarray
    scale: np.ndarray

    def draw(self, n: int, seed: int) -> np.ndarray:
        noise = np.random.default_rng(seed).standard_normal((n, *self.mean.shape))
        return (self.mean + self.scale * noise).astype(np.float32)


class Net:
    """A numpy forward pass that records each BN's input moments while building its graph."""

    def __init__(self, x: np.ndarray, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.x = x.astype(np.float64)
        self.value = "input"
        self.nodes: list = []
        self.initializers: list = []

    def _const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def _node(self, op: str, inputs: list[str], name: str, **attrs) -> None:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        self.value = name

    def bn(self, name: str) -> None:
        axes = (0, *range(2, self.x.ndim))
        mean, var = self.x.mean(axis=axes), self.x.var(axis=axes)
        gamma = self.rng.uniform(0.5, 2.0, mean.shape)
        beta = self.rng.normal(0, 0.5, mean.shape)
        shape = (1, -1) + (1,) * (self.x.ndim - 2)
        self.x = (self.x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS)
        self.x = self.x * gamma.reshape(shape) + beta.reshape(shape)
        params = [self._const(f"{name}.{p}", v) for p, v in
                  (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]  # fmt: skip
        self._node("BatchNormalization", [self.value, *params], name, epsilon=EPS)

    def gemm(self, name: str, units: int) -> None:
        w = self.rng.normal(0, 1 / np.sqrt(self.x.shape[1]), (units, self.x.shape[1]))
        b = self.rng.normal(0, 0.1, units)
        self.x = self.x @ w.T + b
        inputs = [self.value, self._const(f"{name}.w", w), self._const(f"{name}.b", b)]
        self._node("Gemm", inputs, name, transB=1)

    def conv(self, name: str, channels: int, pad: int = 1) -> None:
        w = self.rng.normal(0, 1 / np.sqrt(9 * self.x.shape[1]), (channels, self.x.shape[1], 3, 3))
        b = self.rng.normal(0, 0.1, channels)
        padded = np.pad(self.x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
        self.x = np.einsum("nchwij,ocij->nohw", windows, w) + b.reshape(1, -1, 1, 1)
        inputs = [self.value, self._const(f"{name}.w", w), self._const(f"{name}.b", b)]
        self._node("Conv", inputs, name, pads=[pad] * 4)

    def relu(self, name: str) -> None:
        self.x = np.maximum(self.x, 0)
        self._node("Relu", [self.value], name)

    def flatten(self, name: str) -> None:
        self.x = self.x.reshape(len(self.x), -1)
        self._node("Flatten", [self.value], name)

    def save(self, path: Path, example_shape: tuple[int, ...], classes: int) -> Path:
        self.nodes[-1].output[0] = "logits"
        graph = helper.make_graph(
            self.nodes, "adapt_test",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *example_shape])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
            self.initializers,
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        source = path.with_name(f"{path.stem}-bn.onnx")
        onnx.save(model, source)
        fold_file(source, path)
        return path


def mlp(path: Path, seed: int = 0) -> tuple[Path, Population]:
    """input BN → Gemm → BN → ReLU → Gemm → BN → ReLU → Gemm (logits); 12 features, 5 classes."""
    rng = np.random.default_rng(100 + seed)
    population = Population(rng.normal(0, 3, 12), rng.uniform(0.5, 3.0, 12))
    net = Net(population.draw(POPULATION, seed + 1), seed)
    net.bn("bn0")
    for i, units in enumerate((24, 16)):
        net.gemm(f"fc{i}", units)
        net.bn(f"bn{i + 1}")
        net.relu(f"relu{i}")
    net.gemm("head", 5)
    return net.save(path, (12,), 5), population


def cnn(path: Path, seed: int = 0) -> tuple[Path, Population]:
    """input BN → Conv → BN → ReLU → Conv → BN → ReLU → Flatten → Gemm; [2, 6, 6] in. The first
    conv is unpadded: a BN folds forward exactly only into a conv without padding."""
    rng = np.random.default_rng(200 + seed)
    shape = (2, 6, 6)
    population = Population(rng.normal(0, 2, shape), rng.uniform(0.5, 2.0, shape))
    net = Net(population.draw(POPULATION // 10, seed + 1), seed)
    net.bn("bn0")
    for i, channels in enumerate((4, 6)):
        net.conv(f"conv{i}", channels, pad=i)
        net.bn(f"bn{i + 1}")
        net.relu(f"relu{i}")
    net.flatten("flat")
    net.gemm("head", 4)
    return net.save(path, shape, 4), population
