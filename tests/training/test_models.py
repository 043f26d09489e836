import pytest
import torch
from torch import nn

from foldserve.training.fold import fold_batchnorm
from foldserve.training.models import ModelSpec, build_model


@pytest.mark.parametrize(
    ("spec", "example_shape"),
    [
        (ModelSpec("mlp", (64,), 10), (64,)),
        (ModelSpec("mlp", (5,), 3, hidden=(8,), input_bn=False, dropout=0.0), (5,)),
        (ModelSpec("cnn", (1, 8, 8), 10), (1, 8, 8)),
        (ModelSpec("cnn", (3, 12, 10), 4, channels=(4, 6, 8), head_width=16), (3, 12, 10)),
    ],
)
def test_builders_output_one_logit_per_class_and_fold_completely(spec, example_shape):
    model = build_model(spec).eval()
    inputs = torch.randn(5, *example_shape)
    assert model(inputs).shape == (5, spec.num_classes)
    result = fold_batchnorm(model)
    assert result.left == []
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in result.module.modules())
    expected_bns = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert len(result.bn_stats) == expected_bns


def test_input_bn_folds_forward_into_the_first_layer():
    for spec in (ModelSpec("mlp", (64,), 10), ModelSpec("cnn", (1, 8, 8), 10)):
        report = fold_batchnorm(build_model(spec).eval()).report
        first = report.folded[0] if report.folded[0].layer == "0" else None
        assert first is not None and first.direction == "forward" and first.folded_into == "1"


def test_spec_round_trips_through_a_dict():
    spec = ModelSpec("cnn", (1, 8, 8), 10, channels=(4, 8))
    assert ModelSpec.from_dict(spec.as_dict()) == spec


def test_cnn_needs_image_shaped_input():
    with pytest.raises(ValueError, match="the cnn takes images"):
        build_model(ModelSpec("cnn", (64,), 10))
    with pytest.raises(ValueError, match="arch must be one of"):
        build_model(ModelSpec("rnn", (64,), 10))
