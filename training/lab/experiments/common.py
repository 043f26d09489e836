"""What every experiment shares: the digits split, loaders, seeded runs and small statistics.

The data split is the project's (`foldserve.datasets.split_dataset`, seed 0) in every experiment, so
that seeds vary only the weights, the shuffling and the injected noise.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import lru_cache

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from foldserve.contract.data import DIGITS, SPLIT_SEED
from foldserve.training.data import Dataset, Split, load_dataset, make_loader, split_dataset
from foldserve.training.defaults import EVAL_BATCH_SIZE
from foldserve.training.train import FitSettings, History, fit, seed_everything

CPU = torch.device("cpu")
# Digits pixels are integers 0..16; networks without an input BN see them divided by this, the
# [0, 1] range of the MNIST pixels in Ioffe & Szegedy's Figure 1.
PIXEL_MAX = 16.0


@lru_cache(maxsize=1)
def digits_split() -> Split:
    """The digits train/validation/test split every `foldserve train` run uses by default."""
    return split_dataset(load_dataset(DIGITS), SPLIT_SEED)


def scaled(dataset: Dataset) -> Dataset:
    """`dataset` with its pixels divided by 16 (into [0, 1])."""
    return replace(dataset, features=dataset.features / np.float32(PIXEL_MAX))


def loader(dataset: Dataset, batch_size: int, seed: int = 0, shuffle: bool = True) -> DataLoader:
    """The project's loader over flat feature vectors."""
    return make_loader(dataset, (dataset.num_features,), batch_size, shuffle, seed)


def eval_loader(dataset: Dataset) -> DataLoader:
    """An ordered loader in the evaluation batch size (the order never changes a result)."""
    return loader(dataset, EVAL_BATCH_SIZE, shuffle=False)


def fit_default(
    model: nn.Module, train: Dataset, val: Dataset, epochs: int, batch_size: int, seed: int
) -> History:
    """Train as `foldserve train` does (AdamW, one-cycle, its rate and weight decay), on the CPU.

    Seeds everything first, so call it right after building `model` from a seeded generator.
    """
    settings = FitSettings(epochs=epochs, progress=False)
    return fit(model, loader(train, batch_size, seed), eval_loader(val), settings, CPU)


def seeded(seed: int, build, *args, **kwargs) -> nn.Module:
    """`build(*args, **kwargs)` after seeding every generator with `seed`."""
    seed_everything(seed)
    return build(*args, **kwargs)


def features_of(dataset: Dataset) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(dataset.features))


@contextlib.contextmanager
def preserved(model: nn.Module, buffers_only: bool = False) -> Iterator[nn.Module]:
    """Run measurements on `model` and leave its weights, BN buffers and mode as they were.

    Args:
        buffers_only: restore only the buffers (running statistics) and the mode: for callers
            that run forward passes but never change a weight (cheaper, and called often).
    """
    if buffers_only:
        saved = {name: b.clone() for name, b in model.named_buffers()}
    else:
        saved = copy.deepcopy(model.state_dict())
    # Injected noise draws from its module's own generator: a measurement must not advance it,
    # or measuring more often would change the noise the network trains with.
    generators = [
        m.generator
        for m in model.modules()
        if isinstance(getattr(m, "generator", None), torch.Generator)
    ]
    states = [g.get_state() for g in generators]
    was_training = model.training
    try:
        yield model
    finally:
        model.load_state_dict(saved, strict=not buffers_only)
        for generator, state in zip(generators, states, strict=True):
            generator.set_state(state)
        model.train(was_training)


@torch.no_grad()
def inputs_of(
    model: nn.Module, modules: Sequence[nn.Module], x: torch.Tensor, train_view: bool = False
) -> list[torch.Tensor]:
    """What each of `modules` receives when `model` runs on `x`.

    Args:
        train_view: run in training mode (BN normalizes with `x`'s own statistics, injected noise
            is drawn), i.e. what the layers see while the network trains; the model's buffers are
            restored afterwards. Otherwise eval mode (running statistics).
    """
    seen: dict[int, torch.Tensor] = {}
    handles = [
        module.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0]))
        for i, module in enumerate(modules)
    ]
    try:
        with preserved(model, buffers_only=True):
            model.train(train_view)
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [seen[i] for i in range(len(modules))]


def modules_of(model: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value), with the count."""
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if array.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "n": int(array.size)}


def log_log_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares fit of log y = log c + b · log x: returns the exponent b and prefactor c."""
    slope, intercept = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return {"exponent": float(slope), "prefactor": float(math.exp(intercept))}
