"""Taps against the unfolded torch network, and the calibration export writes with them."""

import numpy as np
import pytest
import torch
from torch import nn

from foldserve.contract import BN_INPUT, BN_OUTPUT, TAPS
from foldserve.core.loading import load_model
from foldserve.training.calibrate import HeldOut, ShiftConfig
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
    held_out = HeldOut(
        rng.normal(1.0, 2.0, (40, *shape)).astype(np.float32), (0.5, 0.3, 0.2), "unit"
    )
    info = ModelInfo(request.param, "unit", shape, ["a", "b", "c"], {}, "v1")
    out = tmp_path_factory.mktemp(request.param)
    result = export_model(model, out, info, inputs, held_out, ShiftConfig(replay=500))
    return request.param, model, result, inputs


def test_taps_equal_the_unfolded_networks_bn_tensors(exported):
    arch, model, result, inputs = exported
    served = load_model(result.model_path)
    taps = served.training.taps
    assert [t.side for t in taps] == [BN_INPUT] + [BN_OUTPUT] * (len(taps) - 1)
    assert [t.spatial for t in taps] == (
        [True, True, True, False] if arch == "cnn" else [False] * 3
    )
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
        square = (tensor * tensor).mean(axis=axes) if axes else tensor * tensor
        channels = mean.shape[1]
        got = values[tap.name]
        assert got.shape == (len(inputs), 2 * channels)
        np.testing.assert_allclose(got[:, :channels], mean, rtol=0, atol=ATOL, err_msg=tap.name)
        # The square's error scales with the value; its root is in the tensor's own units.
        np.testing.assert_allclose(
            np.sqrt(got[:, channels:]), np.sqrt(square), rtol=0, atol=ATOL, err_msg=tap.name
        )
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


def test_export_calibrates_every_layer_on_the_held_out_replay(exported):
    _, _, result, _ = exported
    calibration = result.shift_calibration
    assert calibration.replay == 500 and calibration.data == "unit"
    assert calibration.class_priors == (0.5, 0.3, 0.2)
    assert [c.layer for c in calibration.layers] == [
        t.layer for t in load_model(result.model_path).training.taps
    ]
    for layer in calibration.layers:
        assert layer.clean_max > 0 and layer.threshold == pytest.approx(1.5 * layer.clean_max)
    assert calibration.prior_threshold == pytest.approx(2.0 * calibration.prior_clean_max)
