"""The training loop's hooks: per-step callbacks and the learning-rate schedules."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from foldserve.training.models import build_mlp
from foldserve.training.train import FitSettings, Step, fit, make_schedule


def _loaders(rows: int = 40, batch_size: int = 8) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(rows, 5, generator=generator), torch.arange(rows) % 3)
    return DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=rows)


def test_on_step_sees_every_step_after_its_update():
    torch.manual_seed(0)
    model = build_mlp(5, 3, hidden=(4,), dropout=0.0)
    train, val = _loaders()
    steps: list[Step] = []
    weights: list[torch.Tensor] = []

    def record(step: Step) -> None:
        steps.append(step)
        weights.append(model[1].weight.detach().clone())

    before = model[1].weight.detach().clone()
    settings = FitSettings(epochs=2, progress=False)
    fit(model, train, val, settings, torch.device("cpu"), on_step=record)
    assert [s.index for s in steps] == list(range(1, 11))
    assert [s.epoch for s in steps] == [1] * 5 + [2] * 5
    assert all(s.features.shape == (8, 5) and s.labels.shape == (8,) for s in steps)
    assert all(s.loss > 0 for s in steps)
    assert not torch.equal(weights[0], before)  # called after the optimizer step


def test_constant_schedule_keeps_the_rate_and_unknown_ones_are_refused():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    schedule = make_schedule(optimizer, FitSettings(schedule="constant"), total_steps=5)
    rates = []
    for _ in range(5):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == [0.3] * 5
    one_cycle = make_schedule(optimizer, FitSettings(learning_rate=0.3), total_steps=5)
    assert optimizer.param_groups[0]["lr"] < 0.3  # warms up
    assert isinstance(one_cycle, torch.optim.lr_scheduler.OneCycleLR)
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_schedule(optimizer, FitSettings(schedule="cosine"), total_steps=5)


def test_plain_and_sigmoid_mlps():
    plain = build_mlp(5, 3, hidden=(4, 4), input_bn=False, dropout=0.0, hidden_bn=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in plain.modules())
    sigmoid = build_mlp(5, 3, hidden=(4,), dropout=0.0, activation=nn.Sigmoid)
    assert [type(m) for m in sigmoid] == [
        nn.BatchNorm1d,
        nn.Linear,
        nn.BatchNorm1d,
        nn.Sigmoid,
        nn.Linear,
    ]
