"""Tests for the BatchNorm folding pass.

A zoo of small networks, each folded and checked three ways: outputs match the eval-mode original,
the report says what folded where (and why the rest was left), and no BN module remains but those
the report lists as left.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from foldserve.training.fold import (
    BNStats,
    FoldError,
    FoldReport,
    FoldResult,
    fold_batchnorm,
    fold_bn_into_consumer,
    fold_bn_into_producer,
)

ATOL = RTOL = 1e-5  # float32 bar from the spec


def seq(**layers: nn.Module) -> nn.Sequential:
    """A Sequential whose layers have readable qualified names."""
    return nn.Sequential(OrderedDict(layers))


# --- models that need more than a Sequential -------------------------------------------------


class TwoConsumers(nn.Module):
    """A residual-style branch: the conv output feeds the BN and the skip sum."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        return torch.relu(self.bn(y)) + y


class ForwardFallback(nn.Module):
    """fc1 feeds the BN and a skip: backward is blocked, forward into fc2 is still exact."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.fc2 = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc1(x)
        return self.fc2(self.bn(y)) + y


class BNTwoUsers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc0 = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.fc1 = nn.Linear(8, 3)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn(torch.relu(self.fc0(x)))
        return self.fc1(z) + self.fc2(z)


class SharedBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc2(torch.relu(self.bn(self.fc1(x)))))


class SharedProducer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.conv(x.flip(-1))


class ReadsBNStats(nn.Module):
    """Reads the BN's running mean directly, so changing or removing the BN would show."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x)) + self.bn.running_mean


class TiedWeights(nn.Module):
    """fc2 shares fc1's weight: folding into fc1 must leave fc2's copy as it was."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.bn = nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, 6)
        self.fc2.weight = self.fc1.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class StandardizedConv(nn.Conv2d):
    """A conv that transforms its weight in forward: folding into `.weight` would be wrong."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight - self.weight.mean()) / (self.weight.std() + 1e-5)
        return self._conv_forward(x, w, self.bias)


class CustomBN(nn.BatchNorm2d):
    pass


def cnn(input_padding: int, c: int = 4) -> nn.Sequential:
    """Our CNN's shape: input BN, Conv→BN→ReLU blocks, max-pool, flatten, Linear→BN→ReLU head."""
    side = 8 if input_padding else 6
    return seq(
        bn_in=nn.BatchNorm2d(1),
        conv1=nn.Conv2d(1, c, 3, padding=input_padding, bias=False),
        bn1=nn.BatchNorm2d(c),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(c, c, 3, padding=1, bias=False),
        bn2=nn.BatchNorm2d(c),
        relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2),
        flat=nn.Flatten(),
        fc=nn.Linear(c * (side // 2) ** 2, 16),
        bn3=nn.BatchNorm1d(16),
        relu3=nn.ReLU(),
        drop=nn.Dropout(0.1),
        head=nn.Linear(16, 10),
    )


# --- the zoo ---------------------------------------------------------------------------------


@dataclass
class Case:
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    folded: dict[str, tuple[str, str]]  # bn -> (into, direction)
    left: dict[str, str] = field(default_factory=dict)  # bn -> a phrase its reason must contain


B, F = "backward", "forward"
BN1, BN2, BN3 = nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d

ZOO: dict[str, Case] = {
    "mlp_input_bn": Case(
        lambda: seq(
            bn_in=BN1(6),
            fc1=nn.Linear(6, 16),
            bn1=BN1(16),
            relu1=nn.ReLU(),
            fc2=nn.Linear(16, 8),
            bn2=BN1(8),
            relu2=nn.ReLU(),
            head=nn.Linear(8, 3),
        ),
        (16, 6),
        {"bn_in": ("fc1", F), "bn1": ("fc1", B), "bn2": ("fc2", B)},
    ),
    "linear_bn": Case(lambda: seq(fc=nn.Linear(5, 7), bn=BN1(7)), (8, 5), {"bn": ("fc", B)}),
    "conv1d_bn": Case(
        lambda: seq(conv=nn.Conv1d(3, 5, 3, stride=2, padding=1), bn=BN1(5)),
        (4, 3, 11),
        {"bn": ("conv", B)},
    ),
    "conv2d_bn": Case(
        lambda: seq(conv=nn.Conv2d(3, 5, 3, padding=2, dilation=2), bn=BN2(5)),
        (4, 3, 7, 7),
        {"bn": ("conv", B)},
    ),
    "conv3d_bn": Case(
        lambda: seq(conv=nn.Conv3d(2, 3, 2), bn=BN3(3)), (2, 2, 4, 4, 4), {"bn": ("conv", B)}
    ),
    "grouped_conv_bn": Case(
        lambda: seq(conv=nn.Conv2d(4, 6, 3, groups=2, padding=1), bn=BN2(6)),
        (3, 4, 6, 6),
        {"bn": ("conv", B)},
    ),
    "depthwise_conv_bn": Case(
        lambda: seq(conv=nn.Conv2d(4, 8, 3, groups=4), bn=BN2(8)),
        (3, 4, 6, 6),
        {"bn": ("conv", B)},
    ),
    "conv_transpose1d_groups_bn": Case(
        lambda: seq(
            up=nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
            bn=BN1(6),
        ),
        (3, 4, 5),
        {"bn": ("up", B)},
    ),
    "conv_transpose2d_groups_bn": Case(
        lambda: seq(
            up=nn.ConvTranspose2d(
                6, 9, (3, 2), stride=(2, 3), padding=1, output_padding=(1, 2), groups=3
            ),
            bn=BN2(9),
        ),
        (2, 6, 4, 5),
        {"bn": ("up", B)},
    ),
    "conv_transpose3d_bn": Case(
        lambda: seq(up=nn.ConvTranspose3d(2, 4, 2, stride=2, groups=2, bias=False), bn=BN3(4)),
        (2, 2, 3, 3, 3),
        {"bn": ("up", B)},
    ),
    "no_bias_producers": Case(
        lambda: seq(
            conv=nn.Conv2d(2, 4, 3, bias=False),
            bn1=BN2(4),
            flat=nn.Flatten(),
            fc=nn.Linear(4 * 16, 5, bias=False),
            bn2=BN1(5),
        ),
        (3, 2, 6, 6),
        {"bn1": ("conv", B), "bn2": ("fc", B)},
    ),
    "affine_false": Case(
        lambda: seq(
            bn_in=BN1(6, affine=False),
            fc=nn.Linear(6, 5),
            bn=BN1(5, affine=False),
        ),
        (8, 6),
        {"bn_in": ("fc", F), "bn": ("fc", B)},
    ),
    "relu_bn_linear": Case(
        lambda: seq(fc1=nn.Linear(6, 8), relu=nn.ReLU(), bn=BN1(8), fc2=nn.Linear(8, 3)),
        (8, 6),
        {"bn": ("fc2", F)},
    ),
    "input_bn_conv_pad0": Case(
        lambda: seq(bn_in=BN2(3), conv=nn.Conv2d(3, 4, 3, stride=2)),
        (2, 3, 7, 7),
        {"bn_in": ("conv", F)},
    ),
    "relu_bn_grouped_conv": Case(
        lambda: seq(relu=nn.ReLU(), bn=BN2(4), conv=nn.Conv2d(4, 6, (3, 2), groups=2)),
        (2, 4, 6, 6),
        {"bn": ("conv", F)},
    ),
    "relu_bn_depthwise_conv1d": Case(
        lambda: seq(relu=nn.ReLU(), bn=BN1(4), conv=nn.Conv1d(4, 8, 3, groups=4, bias=False)),
        (2, 4, 9),
        {"bn": ("conv", F)},
    ),
    "bn_reflect_padded_conv": Case(
        # Reflected values are copies of the input, so they shift with it: still exact.
        lambda: seq(bn=BN2(3), conv=nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")),
        (2, 3, 6, 6),
        {"bn": ("conv", F)},
    ),
    "chained_bns": Case(
        lambda: seq(bn_a=BN1(6), bn_b=BN1(6), fc=nn.Linear(6, 4)),
        (8, 6),
        {"bn_a": ("fc", F), "bn_b": ("fc", F)},
    ),
    "backward_preferred": Case(
        lambda: seq(fc1=nn.Linear(6, 8), bn=BN1(8), fc2=nn.Linear(8, 3)),
        (8, 6),
        {"bn": ("fc1", B)},
    ),
    "forward_fallback": Case(ForwardFallback, (8, 6), {"bn": ("fc2", F)}),
    "tied_weights": Case(TiedWeights, (8, 6), {"bn": ("fc1", B)}),
    "input_bn_conv_pad1_left": Case(
        lambda: seq(bn_in=BN2(3), conv=nn.Conv2d(3, 4, 3, padding=1)),
        (2, 3, 6, 6),
        {},
        {"bn_in": "conv 'conv' has padding 1: folding forward would not be exact"},
    ),
    "bn_conv_transpose_left": Case(
        lambda: seq(bn=BN2(4), up=nn.ConvTranspose2d(4, 2, 3, stride=2)),
        (2, 4, 5, 5),
        {},
        {"bn": "conv-transpose 'up' is a ConvTranspose"},
    ),
    "producer_two_consumers_left": Case(
        TwoConsumers, (2, 3, 6, 6), {}, {"bn": "conv 'c1' output has 2 consumers"}
    ),
    "bn_output_two_users_left": Case(BNTwoUsers, (8, 6), {}, {"bn": "its output has 2 consumers"}),
    "shared_bn_left": Case(SharedBN, (8, 6), {}, {"bn": "used at 2 places"}),
    "shared_producer_left": Case(
        SharedProducer, (2, 3, 5, 5), {}, {"bn": "conv 'conv' is used at 2 places"}
    ),
    # Our CNN with a padded first conv: the input BN has no producer and cannot fold forward (the
    # conv's padded zeros would not be shifted), so it stays, reported; everything else folds.
    # training.models.build_cnn makes its first conv unpadded for this reason: then all four fold.
    "cnn_padded_input_conv": Case(
        lambda: cnn(input_padding=1),
        (4, 1, 8, 8),
        {"bn1": ("conv1", B), "bn2": ("conv2", B), "bn3": ("fc", B)},
        {"bn_in": "conv 'conv1' has padding 1"},
    ),
    "cnn_unpadded_input_conv": Case(
        lambda: cnn(input_padding=0),
        (4, 1, 8, 8),
        {"bn_in": ("conv1", F), "bn1": ("conv1", B), "bn2": ("conv2", B), "bn3": ("fc", B)},
    ),
}


# --- helpers ---------------------------------------------------------------------------------


def bns(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]


def randomize_stats(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, variances over four orders of magnitude."""
    with torch.no_grad():
        for _, bn in bns(model):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n) * 2)
            bn.running_var.copy_(10 ** torch.empty(n).uniform_(-2, 2))
            randomize_affine(bn)


def randomize_affine(bn: _BatchNorm) -> None:
    if bn.affine:
        sign = torch.randint(0, 2, (bn.num_features,)) * 2 - 1
        bn.weight.copy_(sign * torch.empty(bn.num_features).uniform_(0.5, 2))
        bn.bias.copy_(torch.randn(bn.num_features))


def train_stats(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Running statistics from a few train-mode batches of shifted, scaled inputs."""
    for _, bn in bns(model):
        bn.momentum = None  # cumulative average: the stats are those of all batches seen
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(shape) * 3 + 1)
        for _, bn in bns(model):
            randomize_affine(bn)


def prepared(case: Case, stats: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    model = case.build().to(dtype)
    if stats == "trained":
        train_stats(model, case.input_shape)
    else:
        randomize_stats(model)
    return model.eval()


def assert_report(result: FoldResult, case: Case) -> None:
    report = result.report
    assert {f.layer: (f.folded_into, f.direction) for f in report.folded} == case.folded
    assert {x.layer for x in report.left} == set(case.left)
    for entry in report.left:
        assert case.left[entry.layer] in entry.reason
    assert {name for name, _ in bns(result.module)} == set(case.left)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- the zoo, folded -------------------------------------------------------------------------


@pytest.mark.parametrize("stats", ["random", "trained"])
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_folds_exactly(name: str, stats: str) -> None:
    case = ZOO[name]
    model = prepared(case, stats)
    x = (
        torch.randn(case.input_shape) * 3 + 1
        if stats == "trained"
        else torch.randn(case.input_shape)
    )
    result = fold_batchnorm(model)
    folded = result.module
    assert not folded.training
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=ATOL, rtol=RTOL)
    assert_report(result, case)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_folds_float64_models(name: str) -> None:
    case = ZOO[name]
    model = prepared(case, "random", torch.float64)
    x = torch.randn(case.input_shape, dtype=torch.float64)
    result = fold_batchnorm(model)
    folded = result.module
    assert all(p.dtype == torch.float64 for p in folded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-10, rtol=1e-10)
    assert_report(result, case)


# --- the original, the report, the errors ----------------------------------------------------


def test_original_model_untouched() -> None:
    model = cnn(input_padding=0)
    randomize_stats(model)
    model.train()
    model.drop.eval()  # a mix of flags, which must survive as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: m.training for n, m in model.named_modules()}

    folded = fold_batchnorm(model).module

    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert len(bns(model)) == 4
    assert not any(m.training for m in folded.modules())


def test_report_serializes_and_carries_the_statistics() -> None:
    model = prepared(ZOO["affine_false"], "random")
    model.bn.eps = 1e-3
    result = fold_batchnorm(model)
    report: FoldReport = result.report

    assert json.loads(json.dumps(report.to_json())) == {
        "folded": [
            {"layer": "bn_in", "folded_into": "fc", "direction": "forward"},
            {"layer": "bn", "folded_into": "fc", "direction": "backward"},
        ],
        "left": [],
    }
    stats = json.loads(json.dumps([s.to_json() for s in result.bn_stats]))
    fields = {f.name for f in dataclasses.fields(BNStats)} | {"num_features"}
    assert [set(s) for s in stats] == [fields] * 2
    assert [BNStats.from_json(s, "stats") for s in stats] == result.bn_stats
    by_name = {s["layer"]: s for s in stats}
    assert by_name["bn"]["num_features"] == 5
    assert by_name["bn"]["eps"] == pytest.approx(1e-3)
    assert by_name["bn"]["mean"] == pytest.approx(model.bn.running_mean.tolist())
    assert by_name["bn"]["var"] == pytest.approx(model.bn.running_var.tolist())
    assert by_name["bn"]["gamma"] == [1.0] * 5  # affine=False
    assert by_name["bn"]["beta"] == [0.0] * 5


def test_result_survives_deepcopy_and_save(tmp_path: Path) -> None:
    result = fold_batchnorm(prepared(ZOO["mlp_input_bn"], "random"))
    torch.save(result, tmp_path / "folded.pt")
    loaded = torch.load(tmp_path / "folded.pt", weights_only=False)
    x = torch.randn(4, *ZOO["mlp_input_bn"].input_shape[1:])
    for other in (copy.deepcopy(result), loaded):
        assert other.report == result.report and other.bn_stats == result.bn_stats
        torch.testing.assert_close(other.module(x), result.module(x), atol=0, rtol=0)


def test_report_statistics_of_an_affine_bn() -> None:
    model = prepared(ZOO["linear_bn"], "trained")
    (entry,) = fold_batchnorm(model).bn_stats
    assert entry.gamma == pytest.approx(model.bn.weight.tolist())
    assert entry.beta == pytest.approx(model.bn.bias.tolist())


def test_track_running_stats_false_raises() -> None:
    model = seq(fc=nn.Linear(4, 4), norm=nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(FoldError, match=r"'norm' has track_running_stats=False.*one example"):
        fold_batchnorm(model)


def test_untraceable_model_raises() -> None:
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    with pytest.raises(FoldError, match=r"torch\.fx cannot trace DataDependent"):
        fold_batchnorm(DataDependent())


def test_bn_subclass_is_left() -> None:
    model = seq(conv=nn.Conv2d(2, 3, 1), bn=CustomBN(3)).eval()
    result = fold_batchnorm(model)
    assert "CustomBN is a BatchNorm subclass" in result.left[0].reason


def test_conv_subclass_is_not_folded_into() -> None:
    model = prepared(Case(lambda: seq(conv=StandardizedConv(2, 3, 3), bn=BN2(3)), (), {}), "random")
    x = torch.randn(2, 2, 5, 5)
    result = fold_batchnorm(model)
    assert [x.layer for x in result.left] == ["bn"]
    torch.testing.assert_close(result.module(x), model(x), atol=ATOL, rtol=RTOL)


def test_bn_read_directly_is_left() -> None:
    model = ReadsBNStats()
    randomize_stats(model)
    model.eval()
    x = torch.randn(3, 4)
    result = fold_batchnorm(model)
    assert result.left[0].reason.startswith("the BN module is used at 2 places")
    torch.testing.assert_close(result.module(x), model(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(("padding", "folds"), [("valid", True), ("same", False)])
def test_string_padding(padding: str, folds: bool) -> None:
    model = seq(bn=BN2(2), conv=nn.Conv2d(2, 3, 3, padding=padding))
    randomize_stats(model)
    model.eval()
    result = fold_batchnorm(model)
    assert bool(result.bn_stats) is folds
    x = torch.randn(2, 2, 6, 6)
    torch.testing.assert_close(result.module(x), model(x), atol=ATOL, rtol=RTOL)


def test_example_inputs_catch_linear_on_a_rank3_tensor() -> None:
    # BN1d normalizes axis 1 (length 4) while the Linears mix the last axis (also 4): without
    # shapes the pair looks foldable; with an example input the pass sees the rank and leaves it.
    model = seq(fc1=nn.Linear(3, 4), bn=BN1(4), fc2=nn.Linear(4, 2))
    randomize_stats(model)
    model.eval()
    x = torch.randn(5, 4, 3)
    result = fold_batchnorm(model, example_inputs=(x,))
    (left,) = result.left
    assert "rank-3" in left.reason
    torch.testing.assert_close(result.module(x), model(x), atol=ATOL, rtol=RTOL)


def test_example_inputs_keep_rank2_folds() -> None:
    case = ZOO["mlp_input_bn"]
    model = prepared(case, "trained")
    result = fold_batchnorm(model, example_inputs=(torch.randn(case.input_shape),))
    assert_report(result, case)


# --- the module-level wrappers against torch's own fusion ------------------------------------


@pytest.mark.parametrize(
    ("layer", "bn", "transpose"),
    [
        (nn.Linear(5, 4), BN1(4), False),
        (nn.Conv2d(3, 4, 3, bias=False), BN2(4), False),
        (nn.ConvTranspose2d(3, 4, 3, stride=2), BN2(4), True),  # torch handles groups=1 only
    ],
)
def test_backward_wrapper_matches_torch_fusion(
    layer: nn.Module, bn: _BatchNorm, transpose: bool
) -> None:
    randomize_stats(bn)
    layer.eval()
    bn.eval()
    ours = fold_bn_into_producer(layer, bn)
    if isinstance(layer, nn.Linear):
        theirs = fuse_linear_bn_eval(layer, bn)
    else:
        theirs = fuse_conv_bn_eval(layer, bn, transpose=transpose)
    torch.testing.assert_close(ours.weight, theirs.weight)
    torch.testing.assert_close(ours.bias, theirs.bias)
    assert ours is not layer


def test_forward_wrapper_is_bn_then_layer() -> None:
    bn, conv = BN2(4), nn.Conv2d(4, 6, 3, groups=2)
    randomize_stats(bn)
    bn.eval()
    conv.eval()
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(fold_bn_into_consumer(bn, conv)(x), conv(bn(x)))


def test_wrappers_require_eval_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fold_bn_into_producer(nn.Linear(2, 2), BN1(2))
    with pytest.raises(ValueError, match="ConvTranspose"):
        fold_bn_into_consumer(BN2(2).eval(), nn.ConvTranspose2d(2, 2, 3).eval())


# --- property tests --------------------------------------------------------------------------
# Float64 checks the algebra to near machine precision over a wide range of statistics. Float32
# checks the spec's bar; its rounding error grows with the product of the BN scales, so there the
# variances start at 0.1 (the zoo covers 0.01).

PRECISION = {
    torch.float32: {"log_var": st.floats(-1, 2), "atol": ATOL, "rtol": RTOL},
    torch.float64: {"log_var": st.floats(-3, 3), "atol": 1e-9, "rtol": 1e-9},
}


def set_stats(model: nn.Module, log_var: float, mean_scale: float) -> None:
    with torch.no_grad():
        for _, bn in bns(model):
            bn.running_mean.copy_(torch.randn(bn.num_features) * mean_scale)
            bn.running_var.copy_(10 ** (log_var + torch.rand(bn.num_features)))
            randomize_affine(bn)
    model.eval()


@pytest.mark.parametrize("dtype", list(PRECISION))
@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 12), min_size=2, max_size=4),
    mean_scale=st.floats(0, 3),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_mlp_property(
    dtype: torch.dtype, widths: list[int], mean_scale: float, seed: int, data: st.DataObject
) -> None:
    torch.manual_seed(seed)
    layers: dict[str, nn.Module] = {"bn_in": BN1(widths[0])}
    for i, (w_in, w_out) in enumerate(itertools.pairwise(widths)):
        layers |= {f"fc{i}": nn.Linear(w_in, w_out), f"bn{i}": BN1(w_out), f"act{i}": nn.ReLU()}
    model = seq(**layers).to(dtype)
    set_stats(model, data.draw(PRECISION[dtype]["log_var"]), mean_scale)
    x = torch.randn(7, widths[0], dtype=dtype) * 2

    result = fold_batchnorm(model)
    folded = result.module

    assert not bns(folded)
    directions = {f.layer: (f.folded_into, f.direction) for f in result.bn_stats}
    assert directions == {"bn_in": ("fc0", F)} | {
        f"bn{i}": (f"fc{i}", B) for i in range(len(widths) - 1)
    }
    torch.testing.assert_close(
        folded(x), model(x), atol=PRECISION[dtype]["atol"], rtol=PRECISION[dtype]["rtol"]
    )


@pytest.mark.parametrize("dtype", list(PRECISION))
@settings(max_examples=25, deadline=None)
@given(
    spatial=st.sampled_from([1, 2]),
    groups=st.integers(1, 3),
    in_per_group=st.integers(1, 3),
    out_per_group=st.integers(1, 3),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    transposed=st.booleans(),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_conv_property(
    dtype: torch.dtype,
    spatial: int,
    groups: int,
    in_per_group: int,
    out_per_group: int,
    kernel: int,
    stride: int,
    transposed: bool,
    seed: int,
    data: st.DataObject,
) -> None:
    torch.manual_seed(seed)
    c_in, c_out = groups * in_per_group, groups * out_per_group
    bn_type = BN1 if spatial == 1 else BN2
    conv_type = {
        (1, False): nn.Conv1d,
        (2, False): nn.Conv2d,
        (1, True): nn.ConvTranspose1d,
        (2, True): nn.ConvTranspose2d,
    }[spatial, transposed]
    conv = conv_type(c_in, c_out, kernel, stride=stride, groups=groups)
    model = seq(bn_in=bn_type(c_in), conv=conv, bn_out=bn_type(c_out)).to(dtype)
    set_stats(model, data.draw(PRECISION[dtype]["log_var"]), mean_scale=2)
    x = torch.randn(3, c_in, *[5] * spatial, dtype=dtype)

    result = fold_batchnorm(model)
    folded = result.module

    expected = {"bn_out": ("conv", B)} | ({} if transposed else {"bn_in": ("conv", F)})
    assert {f.layer: (f.folded_into, f.direction) for f in result.bn_stats} == expected
    assert [name for name, _ in bns(folded)] == (["bn_in"] if transposed else [])
    torch.testing.assert_close(
        folded(x), model(x), atol=PRECISION[dtype]["atol"], rtol=PRECISION[dtype]["rtol"]
    )
