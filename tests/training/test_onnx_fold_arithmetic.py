"""The numpy fold arithmetic (`training.onnx_fold.arithmetic`), property-based: it agrees with the
torch fold's arithmetic on every layout, and a folded dense layer computes what the BN and the
layer computed together."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldserve.training.fold import arithmetic as torch_arithmetic
from foldserve.training.onnx_fold import arithmetic

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def bn_and_layer(draw: st.DrawFn, transposed: bool = False) -> dict:
    """A grouped (transposed) conv or dense weight, a bias or none, and BN statistics."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    groups = draw(st.integers(1, 3))
    per_in, per_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    rows, cols = (groups * per_in, per_out) if transposed else (groups * per_out, per_in)
    weight = rng.standard_normal((rows, cols, *kernel))
    out_channels = groups * per_out
    channels = out_channels if draw(st.booleans()) or transposed else groups * per_in
    return {
        "weight": weight,
        "bias": rng.standard_normal(out_channels) if draw(st.booleans()) else None,
        "mean": rng.standard_normal(channels) * 3,
        "var": rng.random(channels) * 5 + 1e-3,
        "gamma": rng.standard_normal(channels),
        "beta": rng.standard_normal(channels),
        "eps": draw(st.sampled_from([0.0, 1e-5, 1e-3])),
        "groups": groups,
        "backward": channels == out_channels,
    }


def _scale_shift(case: dict) -> tuple:
    return arithmetic.bn_scale_shift(
        case["mean"], case["var"], case["eps"], case["gamma"], case["beta"]
    )


def _torch(value: np.ndarray | None) -> torch.Tensor | None:
    return None if value is None else torch.from_numpy(value)


@SETTINGS
@given(bn_and_layer())
def test_numpy_and_torch_arithmetic_agree(case: dict) -> None:
    scale, shift = _scale_shift(case)
    t_scale, t_shift = torch_arithmetic.bn_scale_shift(
        *(torch.from_numpy(case[k]) for k in ("mean", "var")),
        case["eps"],
        *(torch.from_numpy(case[k]) for k in ("gamma", "beta")),
    )
    np.testing.assert_allclose(scale, t_scale.numpy(), rtol=1e-12)
    np.testing.assert_allclose(shift, t_shift.numpy(), rtol=1e-12, atol=1e-12)
    fold = arithmetic.fold_backward if case["backward"] else arithmetic.fold_forward
    t_fold = torch_arithmetic.fold_backward if case["backward"] else torch_arithmetic.fold_forward
    weight, bias = fold(case["weight"], case["bias"], scale, shift, groups=case["groups"])
    t_weight, t_bias = t_fold(
        torch.from_numpy(case["weight"]),
        _torch(case["bias"]),
        t_scale,
        t_shift,
        groups=case["groups"],
    )
    np.testing.assert_allclose(weight, t_weight.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bias, t_bias.numpy(), rtol=1e-12, atol=1e-12)


@SETTINGS
@given(bn_and_layer(transposed=True))
def test_conv_transpose_layout_agrees_with_torch(case: dict) -> None:
    scale, shift = _scale_shift(case)
    weight, bias = arithmetic.fold_backward(
        case["weight"], case["bias"], scale, shift, groups=case["groups"], transposed=True
    )
    t_weight, t_bias = torch_arithmetic.fold_backward(
        torch.from_numpy(case["weight"]),
        _torch(case["bias"]),
        torch.from_numpy(scale),
        torch.from_numpy(shift),
        groups=case["groups"],
        transposed=True,
    )
    np.testing.assert_allclose(weight, t_weight.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bias, t_bias.numpy(), rtol=1e-12, atol=1e-12)


@SETTINGS
@given(
    st.integers(0, 2**32 - 1),
    st.integers(1, 6),
    st.integers(1, 6),
    st.booleans(),
    st.sampled_from([(), (1,), "row"]),
)
def test_a_folded_dense_layer_computes_the_bn_and_the_layer(
    seed: int, n_in: int, n_out: int, backward: bool, bias_shape: object
) -> None:
    """``x @ W.T + b`` with the BN after (backward) or before (forward), biases of the shapes a
    Gemm's C or an Add may have: [out], [1] (one for all), [1, out]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, n_in)) * 4
    weight = rng.standard_normal((n_out, n_in))
    shape = (1, n_out) if bias_shape == "row" else (bias_shape or (n_out,))
    bias = rng.standard_normal(shape)
    channels = n_out if backward else n_in
    mean, var = rng.standard_normal(channels), rng.random(channels) + 0.01
    gamma, beta = rng.standard_normal(channels), rng.standard_normal(channels)

    def bn(values: np.ndarray) -> np.ndarray:
        return (values - mean) / np.sqrt(var + 1e-5) * gamma + beta

    scale, shift = arithmetic.bn_scale_shift(mean, var, 1e-5, gamma, beta)
    if backward:
        expected = bn(x @ weight.T + bias)
        new_weight, new_bias = arithmetic.fold_backward(weight, bias, scale, shift)
    else:
        expected = bn(x) @ weight.T + bias
        new_weight, new_bias = arithmetic.fold_forward(weight, bias, scale, shift)
    np.testing.assert_allclose(x @ new_weight.T + new_bias, expected, rtol=1e-9, atol=1e-9)
