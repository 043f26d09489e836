import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from foldserve.training.precise_bn import recompute_bn_statistics


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.BatchNorm1d(4),
        nn.Linear(4, 6),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Linear(6, 3),
        nn.BatchNorm1d(3),
    )


def test_statistics_are_the_exact_moments_of_each_bn_input():
    model = _model()
    data = torch.randn(300, 4) * torch.tensor([1.0, 10.0, 0.1, 3.0]) + 5
    loader = DataLoader(TensorDataset(data, torch.zeros(300)), batch_size=64)
    # Stale statistics, as if the weights had moved on since they were accumulated.
    for bn in (model[0], model[2], model[5]):
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0)
    changes = recompute_bn_statistics(model, loader, torch.device("cpu"))

    assert [c.layer for c in changes] == ["0", "2", "5"]
    assert all(c.mean_shift_max > 0 for c in changes)
    assert model.training  # the caller's mode is restored
    model.eval()
    with torch.no_grad():
        inputs_of_2 = model[1](model[0](data)).double()
        inputs_of_5 = model[4](model[3](model[2](model[1](model[0](data))))).double()
    for bn, inputs in ((model[0], data.double()), (model[2], inputs_of_2), (model[5], inputs_of_5)):
        torch.testing.assert_close(bn.running_mean.double(), inputs.mean(0), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            bn.running_var.double(), inputs.var(0, unbiased=False), atol=1e-4, rtol=1e-4
        )


def test_outputs_are_normalized_on_the_training_data_afterwards():
    model = _model()
    data = torch.randn(500, 4) * 7 - 3
    loader = DataLoader(TensorDataset(data, torch.zeros(500)), batch_size=100)
    recompute_bn_statistics(model, loader, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        normalized = model[0](data)
    torch.testing.assert_close(normalized.mean(0), model[0].bias, atol=1e-4, rtol=0)


def test_second_run_changes_nothing():
    model = _model()
    data = torch.randn(200, 4)
    loader = DataLoader(TensorDataset(data, torch.zeros(200)), batch_size=50)
    recompute_bn_statistics(model, loader, torch.device("cpu"))
    again = recompute_bn_statistics(model, loader, torch.device("cpu"))
    assert max(c.mean_shift_max for c in again) < 1e-5
