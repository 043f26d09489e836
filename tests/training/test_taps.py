"""Taps against the unfolded torch network, and the shift reference export fits with them."""

import numpy as np
import pytest
import torch
from torch import nn

from foldserve.contract import BN_INPUT, BN_OUTPUT, TAPS
from foldserve.core.loading import load_model
from foldserve.core.shift.calibrate import ReferenceData, ShiftConfig
from foldserve.training.export import ModelInfo, export_model
from foldserve.training.models import build_cnn, build_mlp

ATOL = 1e-5  # the tolerance, in the pre-activation's own units


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.1)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return model.eval()


def _bn_tensors(model: nn.Module, inputs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each BN's input and output in the unfolded network, by layer name."""
    seen = {}
    handles = [
        module.register_forward_hook(
            lambda m, args, out, name=name: seen.__setitem__(name, (args[0].numpy(), out.numpy()))
        )
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    with torch.no_grad():
        model(torch.from_numpy(inputs))
    for handle in handles:
        handle.remove()
    return seen


NETWORKS = {
    "mlp": (lambda: build_mlp(12, 3, hidden=(16, 8), dropout=0.0), (12,)),
    "cnn": (lambda: build_cnn((2, 6, 6), 3, channels=(4, 5), head_width=7, dropout=0.0), (2, 6, 6)),
}


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def exported(request, tmp_path_factory):
    build, shape = NETWORKS[request.param]
    torch.manual_seed(0)
    model = _randomize_bn(build())
    rng = np.random.default_rng(0)
    inputs = rng.normal(1.0, 2.0, (64, *shape)).astype(np.float32)
    reference = ReferenceData(
        rng.normal(1.0, 2.0, (200, *shape)).astype(np.float32), (0.5, 0.3, 0.2), "unit",
        rng.normal(1.0, 2.0, (40, *shape)).astype(np.float32), "unit held out",
    )  # fmt: skip
    info = ModelInfo(request.param, "unit", shape, ["a", "b", "c"], {}, "v1")
    out = tmp_path_factory.mktemp(request.param)
    result = export_model(model, out, info, inputs, reference, ShiftConfig(replay=500))
    return request.param, model, result, inputs


def test_taps_equal_the_unfolded_networks_bn_tensors(exported):
    arch, model, result, inputs = exported
    served = load_model(result.model_path)
    taps = served.training.taps
    # The input BN is not tapped (the monitor reads the input itself); every other one is.
    assert [t.side for t in taps] == [BN_OUTPUT] * len(taps)
    assert [t.spatial for t in taps] == ([True, True, False] if arch == "cnn" else [False] * 2)
    assert all(t.moments == 1 for t in taps)
    names = [t.name for t in taps]
    values = dict(
        zip(names, served.shift.tapped_session.run(names, {"input": inputs}), strict=True)
    )
    expected = _bn_tensors(model, inputs)
    for tap in taps:
        bn_input, bn_output = expected[tap.layer]
        tensor = bn_input if tap.side == BN_INPUT else bn_output
        axes = tuple(range(2, tensor.ndim))
        mean = tensor.mean(axis=axes) if axes else tensor
        got = values[tap.name]
        assert got.shape == (len(inputs), mean.shape[1])
        np.testing.assert_allclose(got, mean, rtol=0, atol=ATOL, err_msg=tap.name)
    every = served.run_classifier(inputs, taps=True)[TAPS]
    np.testing.assert_array_equal(every, np.concatenate([values[n] for n in names], axis=1))
    assert result.max_tap_error < 1e-3


def test_predictions_without_taps_run_a_graph_without_them(exported):
    _, model, result, inputs = exported
    served = load_model(result.model_path)
    assert [o.name for o in served.session.get_outputs()] == ["logits", "probabilities"]
    plain, tapped = (
        served.run_classifier(inputs)["logits"],
        served.run_classifier(inputs, taps=True)["logits"],
    )
    np.testing.assert_array_equal(plain, tapped)
    with torch.no_grad():
        np.testing.assert_allclose(plain, model(torch.from_numpy(inputs)).numpy(), atol=1e-4)


def test_the_tap_graph_adds_few_nodes(exported):
    """onnxruntime pays per node on every monitored call: a vector tap is the layer's own output
    (no node), a conv's one ReduceMean; one Concat lays them end to end."""
    import onnx

    arch, _, result, _ = exported
    graph = onnx.load(str(result.model_path)).graph
    kinds = [node.op_type for node in graph.node]
    assert kinds.count("Concat") == 1
    assert kinds.count("ReduceMean") == (2 if arch == "cnn" else 0)
    assert "Mul" not in kinds


def test_export_fits_the_reference_and_checks_it_by_replay(exported):
    _, _, result, _ = exported
    reference = result.shift_reference
    assert reference.data == "unit" and reference.examples == 200
    assert reference.replay == 500 and reference.replay_data == "unit held out"
    assert reference.class_priors == (0.5, 0.3, 0.2)
    taps = load_model(result.model_path).training.taps
    names = [g.name for g in reference.groups]
    assert names == ["input", *(t.layer for t in taps), "probabilities"]
    assert reference.groups[0].summaries[-1] == "residual"
    # The priors given are not this random network's predictions: the class tests may fire.
    assert reference.arl == 1e6 and reference.replay_alarms >= 0 and reference.replay_peak > 0
