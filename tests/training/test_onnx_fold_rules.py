"""`training.onnx_fold` on small graphs built with onnx.helper: every kind of fold, checked in
onnxruntime against the unfolded graph, and every refusal with its reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from foldserve.contract import BACKWARD, FORWARD
from foldserve.training.onnx_fold import FoldResult, fold_model, verify
from tests.training.onnx_graphs import Builder, tensor


def _folded(model: onnx.ModelProto, folds: int) -> FoldResult:
    """Fold, check the result and compare it with the input in onnxruntime."""
    result = fold_model(model)
    onnx.checker.check_model(result.model, full_check=True)
    check = verify(model, result.model)
    assert check.max_scaled_error < 1e-5
    assert len(result.bn_stats) == folds, result.left
    assert result.bn_after == result.bn_before - folds
    return result


def _ops(result: FoldResult) -> list[str]:
    return [node.op_type for node in result.model.graph.node]


def _conv(b: Builder, x: str, cin: int, cout: int, name: str, bias: bool = True, **attrs) -> str:
    groups = attrs.get("group", 1)
    inputs = [x, b.weight(f"{name}.w", (cout, cin // groups, 3, 3))]
    inputs += [b.weight(f"{name}.b", (cout,))] if bias else []
    return b.node("Conv", inputs, name, **attrs)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_then_bn_folds_backward_and_keeps_the_output_name(bias: bool) -> None:
    b = Builder()
    y = b.bn(_conv(b, "x", 3, 4, "conv", bias, pads=[1, 1, 1, 1]), 4, "bn")
    model = b.model([tensor("x", ["N", 3, 6, 6])], [tensor(y, ["N", 4, 6, 6])], "g")
    result = _folded(model, 1)
    assert _ops(result) == ["Conv"]
    assert result.model.graph.node[0].output[0] == y  # the graph output keeps its name
    (stats,) = result.bn_stats
    assert (stats.layer, stats.folded_into, stats.direction) == ("bn", "conv", BACKWARD)
    assert not stats.reads_model_input
    assert {t.name for t in result.model.graph.initializer} == (
        {"conv.w", "conv.b"} if bias else {"conv.w", "conv_bias"}
    )


def test_grouped_conv_transpose_then_bn_folds_backward() -> None:
    b = Builder()
    w = b.weight("deconv.w", (4, 3, 2, 2))  # [in, out/groups, k, k], 2 groups: 6 outputs
    x = b.node("ConvTranspose", ["x", w], "deconv", group=2, strides=[2, 2])
    y = b.bn(x, 6, "bn")
    model = b.model([tensor("x", ["N", 4, 3, 3])], [tensor(y, ["N", 6, 6, 6])], "g")
    assert _ops(_folded(model, 1)) == ["ConvTranspose"]


@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm_then_bn_folds_backward_with_alpha_beta_and_a_bias_row(trans_a, trans_b) -> None:
    b = Builder()
    w = b.weight("w", (5, 3) if trans_b else (3, 5))
    c = b.weight("c", (1, 5))
    x = b.node("Gemm", ["x", w, c], "gemm", alpha=0.5, beta=2.0, transA=trans_a, transB=trans_b)
    y = b.bn(x, 5, "bn")
    shape = [3, "N"] if trans_a else ["N", 3]
    result = _folded(b.model([tensor("x", shape)], [tensor(y, ["N", 5])], "g"), 1)
    assert _ops(result) == ["Gemm"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_bn_then_gemm_without_bias_folds_forward(trans_b: int) -> None:
    b = Builder()
    x = b.bn("x", 3, "bn")
    w = b.weight("w", (4, 3) if trans_b else (3, 4))
    y = b.node("Gemm", [x, w], "gemm", transB=trans_b, alpha=3.0)
    result = _folded(b.model([tensor("x", ["N", 3])], [tensor(y, ["N", 4])], "g"), 1)
    (stats,) = result.bn_stats
    assert stats.direction == FORWARD and stats.reads_model_input


def test_matmul_then_bn_gets_a_bias_add() -> None:
    b = Builder()
    y = b.bn(b.node("MatMul", ["x", b.weight("w", (3, 4))], "mm"), 4, "bn")
    result = _folded(b.model([tensor("x", ["N", 3])], [tensor(y, ["N", 4])], "g"), 1)
    assert _ops(result) == ["MatMul", "Add"]
    assert result.model.graph.node[1].output[0] == y


@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_add_then_bn_folds_into_both(bias_first: bool) -> None:
    b = Builder()
    x = b.node("MatMul", ["x", b.weight("w", (3, 4))], "mm")
    bias = b.weight("bias", (4,))
    x = b.node("Add", [bias, x] if bias_first else [x, bias], "add")
    y = b.bn(x, 4, "bn")
    result = _folded(b.model([tensor("x", ["N", 3])], [tensor(y, ["N", 4])], "g"), 1)
    assert _ops(result) == ["MatMul", "Add"]
    assert result.bn_stats[0].folded_into == "mm"


def test_bn_then_matmul_folds_forward_into_the_following_bias() -> None:
    b = Builder()
    x = b.node("MatMul", [b.bn("x", 3, "bn"), b.weight("w", (3, 4))], "mm")
    y = b.node("Add", [x, b.weight("bias", (1, 4))], "add")
    result = _folded(b.model([tensor("x", ["N", 3])], [tensor(y, ["N", 4])], "g"), 1)
    assert _ops(result) == ["MatMul", "Add"]


def test_bn_then_matmul_alone_gets_a_bias_add_under_the_matmul_output_name() -> None:
    b = Builder()
    y = b.node("MatMul", [b.bn("x", 3, "bn"), b.weight("w", (3, 4))], "mm")
    result = _folded(b.model([tensor("x", ["N", 3])], [tensor(y, ["N", 4])], "g"), 1)
    assert _ops(result) == ["MatMul", "Add"]
    assert result.model.graph.node[1].output[0] == y


@pytest.mark.parametrize("pads", [{"auto_pad": "VALID"}, {"pads": [0, 0, 0, 0]}, {}])
def test_bn_then_unpadded_grouped_conv_folds_forward(pads: dict) -> None:
    b = Builder()
    y = _conv(b, b.bn("x", 4, "bn"), 4, 6, "conv", group=2, **pads)
    result = _folded(b.model([tensor("x", ["N", 4, 5, 5])], [tensor(y, ["N", 6, 3, 3])], "g"), 1)
    assert result.bn_stats[0].direction == FORWARD


def test_bn_matmul_bn_both_fold_through_the_new_bias() -> None:
    b = Builder()
    x = b.node("MatMul", [b.bn("x", 3, "bn1"), b.weight("w", (3, 4))], "mm")
    y = b.bn(x, 4, "bn2")
    result = _folded(b.model([tensor("x", ["N", 3])], [tensor(y, ["N", 4])], "g"), 2)
    assert [s.direction for s in result.bn_stats] == [FORWARD, BACKWARD]
    assert _ops(result) == ["MatMul", "Add"]


def test_bn_then_bn_then_gemm_both_fold() -> None:
    b = Builder()
    x = b.node("Gemm", ["x", b.weight("w", (4, 3))], "gemm", transB=1)
    y = b.bn(b.bn(x, 4, "bn1"), 4, "bn2")
    result = _folded(b.model([tensor("x", ["N", 3])], [tensor(y, ["N", 4])], "g"), 2)
    assert [s.folded_into for s in result.bn_stats] == ["gemm", "gemm"]


def test_a_shared_weight_is_copied_and_the_other_layer_keeps_it() -> None:
    b = Builder()
    w = b.weight("tied", (3, 3))
    x = b.bn(b.node("MatMul", ["x", w], "mm1"), 3, "bn")
    y = b.node("MatMul", [x, w], "mm2")
    result = _folded(b.model([tensor("x", ["N", 3])], [tensor(y, ["N", 3])], "g"), 1)
    nodes = {n.name: n for n in result.model.graph.node}
    assert nodes["mm2"].input[1] == "tied" and nodes["mm1"].input[1] == "tied_folded"
    original = numpy_helper.to_array(b.initializers[0])
    kept = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}["tied"]
    np.testing.assert_array_equal(kept, original)


def test_parameters_through_identity_and_constant_nodes_fold_and_the_plumbing_goes() -> None:
    """torch's exporter writes Identity for parameters equal to others; some tools Constant."""
    b = Builder()
    gamma = b.weight("gamma", (4,))
    value = numpy_helper.from_array(np.full(4, 0.5, np.float32), "mean_value")
    b.nodes.append(helper.make_node("Constant", [], ["mean"], name="c", value=value))
    b.nodes.append(helper.make_node("Identity", [gamma], ["beta"], name="id"))
    var = b.weight("var", (4,), 0.0)
    b.initializers[-1].CopyFrom(numpy_helper.from_array(np.ones(4, np.float32), "var"))
    x = b.node("Gemm", ["x", b.weight("w", (4, 3))], "gemm", transB=1)
    y = b.node("BatchNormalization", [x, gamma, "beta", "mean", var], "bn")
    result = _folded(b.model([tensor("x", ["N", 3])], [tensor(y, ["N", 4])], "g"), 1)
    assert _ops(result) == ["Gemm"]
    assert {t.name for t in result.model.graph.initializer} == {"w", "gemm_bias"}


def _refusal(model: onnx.ModelProto) -> str:
    result = fold_model(model)
    assert not result.bn_stats and result.bn_after == result.bn_before
    (left,) = result.left
    return left.reason


def _graph_conv_bn(**bn_attrs) -> onnx.ModelProto:
    b = Builder()
    x = _conv(b, "x", 3, 4, "conv")
    inputs = [x, *(b.weight(f"p{i}", (4,), 1.0) for i in range(3)), b.weight("var", (4,))]
    b.initializers[-1].CopyFrom(numpy_helper.from_array(np.ones(4, np.float32), "var"))
    outputs = ["y", *bn_attrs.pop("extra_outputs", [])]
    b.nodes.append(helper.make_node("BatchNormalization", inputs, outputs, name="bn", **bn_attrs))
    opset = bn_attrs.get("opset", 15)
    outs = [tensor(name, ["N", 4, 3, 3] if name == "y" else [4]) for name in outputs]
    return b.model([tensor("x", ["N", 3, 5, 5])], outs, "g", opset=opset)


def test_training_mode_is_left() -> None:
    model = _graph_conv_bn(training_mode=1, extra_outputs=["running_mean", "running_var"])
    assert _refusal(model).startswith("training_mode=1")
    verify(model, fold_model(model).model)  # still runs and still equals the input


def test_the_training_form_with_statistics_outputs_is_left() -> None:
    b = Builder()
    params = [b.weight(f"p{i}", (4,), 1.0) for i in range(4)]
    outputs = ["y", "mean", "var", "saved_mean", "saved_var"]
    b.nodes.append(helper.make_node("BatchNormalization", ["x", *params], outputs, name="bn"))
    shapes = [["N", 4], [4], [4], [4], [4]]
    outs = [tensor(o, shape) for o, shape in zip(outputs, shapes, strict=True)]
    model = b.model([tensor("x", ["N", 4])], outs, "g", opset=9)
    assert "it has 5 outputs (mean, var, saved_mean, saved_var)" in _refusal(model)


def _bn_between(
    b: Builder, source: str, channels: int, reader: str, shape: list, **attrs
) -> onnx.ModelProto:
    x = b.bn(source, channels, "bn")
    if reader == "Conv":
        y = _conv(b, x, channels, 2, "conv", **attrs)
    else:
        y = b.node(reader, [x, b.weight("w", (channels, 2))], "layer", **attrs)
    return b.model([tensor("x", shape)], [tensor(y, ["N", 2])], "g")


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"pads": [1, 1, 1, 1]}, "Conv 'conv' has pads [1, 1, 1, 1]: the zeros it pads"),
        ({"auto_pad": "SAME_UPPER"}, "Conv 'conv' has auto_pad=SAME_UPPER: the zeros it pads"),
    ],
)
def test_bn_before_a_padded_conv_is_left(attrs: dict, reason: str) -> None:
    model = _bn_between(Builder(), "x", 3, "Conv", ["N", 3, 5, 5], **attrs)
    assert _refusal(model) == f"backward: its input 'x' is a graph input, not a layer's output; " \
        f"forward: {reason} would not be shifted"  # fmt: skip


def test_bn_before_gemm_with_trans_a_is_left() -> None:
    model = _bn_between(Builder(), "x", 3, "Gemm", ["N", 3], transA=1)
    assert "Gemm 'layer' has transA=1: the BN's axis 1 would be its batch axis" in _refusal(model)


def test_bn_before_a_rank_3_matmul_is_left() -> None:
    b = Builder()  # [N, 3, 7] @ [7, 2]: the BN's channels (axis 1) are not what W mixes
    y = b.node("MatMul", [b.bn("x", 3, "bn"), b.weight("w", (7, 2))], "mm")
    model = b.model([tensor("x", ["N", 3, 7])], [tensor(y, ["N", 3, 2])], "g")
    assert _refusal(model).endswith(
        "forward: 'bn:0' has rank 3: the BN normalizes axis 1, MatMul 'mm' mixes the last axis, "
        "and only for rank 2 are they the same"
    )


def test_shared_producer_dynamic_weights_graph_output_and_dynamic_statistics_are_left() -> None:
    b = Builder()  # conv output read twice; the BN output is a graph output
    x = _conv(b, "x", 3, 4, "conv")
    y = b.bn(x, 4, "bn")
    relu = b.node("Relu", [x], "relu")
    outputs = [tensor(y, ["N", 4, 3, 3]), tensor(relu, ["N", 4, 3, 3])]
    model = b.model([tensor("x", ["N", 3, 5, 5])], outputs, "g")
    assert _refusal(model) == (
        "backward: Conv 'conv' output 'conv:0' has 2 readers: folding would change what the "
        "others see; forward: its output 'bn:0' is a graph output"
    )
    b = Builder()  # the conv's weight is fed at run time
    x = b.node("Conv", ["x", "w"], "conv")
    y = b.node("Relu", [b.bn(x, 4, "bn")], "relu")
    inputs = [tensor("x", ["N", 3, 5, 5]), tensor("w", [4, 3, 3, 3])]
    reason = _refusal(b.model(inputs, [tensor(y, ["N", 4, 3, 3])], "g"))
    assert reason.startswith("backward: Conv 'conv' weight 'w' is not a constant")
    b = Builder()  # the BN's statistics are graph inputs, as in onnx's own node tests
    x = _conv(b, "x", 3, 4, "conv")
    b.nodes.append(helper.make_node("BatchNormalization", [x, "s", "b", "m", "v"], ["y"]))
    inputs = [tensor("x", ["N", 3, 5, 5]), *(tensor(n, [4]) for n in "sbmv")]
    reason = _refusal(b.model(inputs, [tensor("y", ["N", 4, 3, 3])], "g"))
    assert reason == "its scale 's' is not a constant (a graph input or computed at run time)"


def test_a_bn_inside_a_subgraph_is_left_with_its_owner() -> None:
    inner = Builder()
    y = inner.bn("x", 3, "inner_bn")
    branch = helper.make_graph(inner.nodes, "then", [], [tensor(y, ["N", 3])], inner.initializers)
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["z"])], "else", [], [tensor("z", ["N", 3])]
    )
    b = Builder()
    b.nodes.append(
        helper.make_node("If", ["flag"], ["out"], name="if", then_branch=branch, else_branch=other)
    )
    flag = helper.make_tensor_value_info("flag", onnx.TensorProto.BOOL, [])
    model = b.model([tensor("x", ["N", 3]), flag], [tensor("out", ["N", 3])], "g")
    result = fold_model(model)
    assert result.bn_before == result.bn_after == 1
    assert result.left[0].reason == "inside a subgraph of 'if': only the main graph is folded"
