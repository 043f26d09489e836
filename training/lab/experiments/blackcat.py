"""Covariate shift, the lecture's black cats: train on light-ink digits, test on shifted ones.

The digits are split by ink (the sum of an image's pixels) at each class's median: the training
slice is the light-ink half of the project's training split. Test slices: the light-ink and the
heavy-ink halves of the test split (a natural shift: other writers, same labels), and the light
half with its pixels faded (×0.5), emboldened (×1.5) or on a grey background (+4), clipped to
the pixel range 0..16. Every slice keeps the labelling function; only the inputs moved.

Models: the project's MLP without BN (pixels scaled to [0, 1]), with BN (input BN and hidden
BNs, running statistics, i.e. what the folded, served model computes), and the BN model with its
statistics re-estimated on the test slice itself (no labels used), which only a server that sees
many examples of the new traffic could do. An input shift score (foldserve 0.1's per-pixel
statistic, `shift_score`, fed the input BN's statistics from the fold) is reported for each
slice, after a stream of traffic drawn from it.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from foldserve.contract import BNStats
from foldserve.training.data import Dataset
from foldserve.training.defaults import BATCH_SIZE, DROPOUT
from foldserve.training.fold import fold_batchnorm
from foldserve.training.lab.config import LabConfig
from foldserve.training.lab.experiments.common import (
    CPU,
    PIXEL_MAX,
    digits_split,
    eval_loader,
    fit_default,
    mean_std,
    scaled,
    seeded,
)
from foldserve.training.lab.experiments.nets import production_mlp
from foldserve.training.lab.experiments.shift_score import HALF_LIFE, input_shift_score
from foldserve.training.precise_bn import recompute_bn_statistics
from foldserve.training.train import evaluate

MODELS = ("no BN", "BN (running statistics = folded)", "BN, statistics re-estimated on the slice")
GREY = 4.0  # the grey background's offset, in pixel units (0..16)
NEAR_CONSTANT_VARIANCE = 0.01  # a pixel whose training variance is below this barely varies
# Traffic replayed into the monitor: ten half-lives, so the score reflects the slice alone.
MONITOR_EXAMPLES = int(10 * HALF_LIFE)


def _ink(dataset: Dataset) -> np.ndarray:
    return dataset.features.sum(axis=1)


def ink_thresholds() -> np.ndarray:
    """Each class's median ink over the whole digits split (train, validation and test)."""
    split = digits_split()
    ink = np.concatenate([_ink(d) for d in (split.train, split.val, split.test)])
    labels = np.concatenate([d.labels for d in (split.train, split.val, split.test)])
    return np.array([np.median(ink[labels == c]) for c in range(labels.max() + 1)])


def ink_half(dataset: Dataset, heavy: bool) -> Dataset:
    """The examples at or below (light) or above (heavy) their class's median ink."""
    above = _ink(dataset) > ink_thresholds()[dataset.labels]
    return dataset.subset(np.flatnonzero(above if heavy else ~above))


def _transformed(dataset: Dataset, scale: float, offset: float) -> Dataset:
    pixels = np.clip(dataset.features * scale + offset, 0.0, PIXEL_MAX).astype(np.float32)
    return replace(dataset, features=pixels)


def test_slices() -> dict[str, Dataset]:
    """The test slices, by name; the first is the training distribution."""
    test = digits_split().test
    light = ink_half(test, heavy=False)
    return {
        "light ink (as trained)": light,
        "heavy ink (other writers)": ink_half(test, heavy=True),
        "faded ×0.5": _transformed(light, 0.5, 0.0),
        "bold ×1.5": _transformed(light, 1.5, 0.0),
        f"grey background +{GREY:g}": _transformed(light, 1.0, GREY),
    }


def input_bn_stats(model: nn.Module, num_features: int) -> BNStats:
    """The statistics of `model`'s input BN, as its fold hands them to the model file."""
    stats = fold_batchnorm(model, example_inputs=(torch.zeros(2, num_features),)).bn_stats
    return next(s for s in stats if s.reads_model_input)


def shift_score(input_bn: BNStats, dataset: Dataset, seed: int) -> float:
    """The input shift score (`shift_score`) after a stream of traffic drawn from `dataset`:
    shuffled passes over it, at least `MONITOR_EXAMPLES` examples."""
    rng = np.random.default_rng(seed)
    passes = -(-MONITOR_EXAMPLES // len(dataset))
    order = np.concatenate([rng.permutation(len(dataset)) for _ in range(passes)])
    return input_shift_score(input_bn, dataset.features[order])


def _adapted_accuracy(model: nn.Module, dataset: Dataset) -> float:
    adapted = copy.deepcopy(model)
    recompute_bn_statistics(adapted, eval_loader(dataset), CPU)
    return evaluate(adapted, eval_loader(dataset), CPU)[1]


def one_seed(seed: int, epochs: int) -> dict:
    split = digits_split()
    train, val = ink_half(split.train, heavy=False), ink_half(split.val, heavy=False)
    plain = seeded(seed, production_mlp, hidden_bn=False, dropout=DROPOUT)
    fit_default(plain, scaled(train), scaled(val), epochs, BATCH_SIZE, seed)
    bn = seeded(seed, production_mlp, hidden_bn=True, dropout=DROPOUT, input_bn=True)
    fit_default(bn, train, val, epochs, BATCH_SIZE, seed)
    input_bn = input_bn_stats(bn, train.num_features)
    rows = {}
    for name, dataset in test_slices().items():
        rows[name] = {
            "examples": len(dataset),
            MODELS[0]: evaluate(plain, eval_loader(scaled(dataset)), CPU)[1],
            MODELS[1]: evaluate(bn, eval_loader(dataset), CPU)[1],
            MODELS[2]: _adapted_accuracy(bn, dataset),
            "shift_score": shift_score(input_bn, dataset, seed),
        }
    variance = np.asarray(input_bn.var)
    return {
        "seed": seed,
        "train_examples": len(train),
        "slices": rows,
        # Why a grey background can break the BN model: pixels that never vary in training get
        # divided by almost nothing once the background moves.
        "near_constant_pixels": int((variance < NEAR_CONSTANT_VARIANCE).sum()),
        "grey_offset_in_stds": float((GREY / np.sqrt(variance + input_bn.eps)).max()),
    }


def run(cfg: LabConfig) -> dict:
    """Every seed's accuracies and shift scores, and their mean ± std per slice."""
    with torch.no_grad():
        thresholds = ink_thresholds()
    seeds = [one_seed(seed, cfg.model_epochs) for seed in cfg.seeds]
    names = list(seeds[0]["slices"])
    summary = {
        name: {
            "examples": seeds[0]["slices"][name]["examples"],
            **{
                key: mean_std([r["slices"][name][key] for r in seeds])
                for key in (*MODELS, "shift_score")
            },
        }
        for name in names
    }
    return {
        "seeds": seeds,
        "summary": summary,
        "median_ink": [float(t) for t in thresholds],
        "train_examples": seeds[0]["train_examples"],
        "near_constant_pixels": mean_std([r["near_constant_pixels"] for r in seeds]),
        "grey_offset_in_stds": mean_std([r["grey_offset_in_stds"] for r in seeds]),
        "epochs": cfg.model_epochs,
    }
