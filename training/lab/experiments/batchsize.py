"""Regularization and mini-batch size: how noisy are batch statistics, and what does BN's noise do?

1. The spread of mini-batch means and variances of a trained network's BN inputs, against the
   batch size, next to the sampling law (standard error 1/√B, corrected for drawing batches
   without replacement from a finite training set) and a least-squares power-law fit.
2. The generalization gap (validation − training loss, training − validation accuracy) of the
   project's digits MLP for several batch sizes, with and without BN, with and without dropout.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from foldserve.training.defaults import DROPOUT
from foldserve.training.lab.config import LabConfig
from foldserve.training.lab.experiments.common import (
    CPU,
    digits_split,
    eval_loader,
    features_of,
    fit_default,
    inputs_of,
    log_log_fit,
    mean_std,
    modules_of,
    scaled,
    seeded,
)
from foldserve.training.lab.experiments.nets import production_mlp
from foldserve.training.train import evaluate

SAMPLED_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
VARIANTS = (
    {"bn": False, "dropout": 0.0},
    {"bn": True, "dropout": 0.0},
    {"bn": False, "dropout": DROPOUT},
)


def variant_name(bn: bool, dropout: float) -> str:
    return ("BN" if bn else "no BN") + (f" + dropout {dropout:g}" if dropout else "")


def gap_run(bn: bool, dropout: float, batch_size: int, seed: int, epochs: int):
    """Train one variant; return its gap record and the model."""
    split = digits_split()
    train, val, test = (scaled(d) for d in (split.train, split.val, split.test))
    model = seeded(seed, production_mlp, hidden_bn=bn, dropout=dropout)
    fit_default(model, train, val, epochs, batch_size, seed)
    train_loss, train_accuracy = evaluate(model, eval_loader(train), CPU)
    val_loss, val_accuracy = evaluate(model, eval_loader(val), CPU)
    _, test_accuracy = evaluate(model, eval_loader(test), CPU)
    record = {
        "bn": bn,
        "dropout": dropout,
        "batch_size": batch_size,
        "seed": seed,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "loss_gap": val_loss - train_loss,
        "accuracy_gap": train_accuracy - val_accuracy,
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
    }
    return record, model


def summarize_gaps(records: list[dict]) -> list[dict]:
    """Mean ± std over seeds of every (variant, batch size)."""
    rows = []
    keys = sorted({(r["bn"], r["dropout"], r["batch_size"]) for r in records})
    for bn, dropout, batch_size in keys:
        group = [
            r
            for r in records
            if (r["bn"], r["dropout"], r["batch_size"]) == (bn, dropout, batch_size)
        ]
        row = {"variant": variant_name(bn, dropout), "bn": bn, "dropout": dropout}
        row["batch_size"] = batch_size
        for key in ("loss_gap", "accuracy_gap", "val_accuracy", "test_accuracy"):
            row[key] = mean_std([r[key] for r in group])
        rows.append(row)
    return rows


def _layer_spread(x: np.ndarray, samples: int, rng: np.random.Generator) -> dict:
    """The spread of batch means and variances of one BN's inputs `x` (N × units)."""
    n = x.shape[0]
    mean, var = x.mean(0), x.var(0)
    kurtosis = ((x - mean) ** 4).mean(0) / np.maximum(var, 1e-12) ** 2
    rows = []
    for size in SAMPLED_SIZES:
        means, variances = np.empty((samples, x.shape[1])), np.empty((samples, x.shape[1]))
        for sample in range(samples):
            batch = x[rng.choice(n, size, replace=False)]
            means[sample], variances[sample] = batch.mean(0), batch.var(0)
        correction = np.sqrt((n - size) / (n - 1))  # finite population
        rows.append(
            {
                "batch_size": size,
                "mean_spread": float(np.mean(means.std(0) / np.sqrt(var))),
                "var_spread": float(np.mean(variances.std(0) / var)),
                "population_correction": float(correction),
                "mean_law": float(correction / np.sqrt(size)),
                "var_law": float(np.mean(np.sqrt(kurtosis - 1)) * correction / np.sqrt(size)),
            }
        )
    sizes = [r["batch_size"] for r in rows]
    return {
        "num_features": x.shape[1],
        "train_examples": n,
        "mean_kurtosis": float(kurtosis.mean()),
        "rows": rows,
        "mean_fit": log_log_fit(sizes, [r["mean_spread"] for r in rows]),
        "mean_fit_corrected": log_log_fit(
            sizes, [r["mean_spread"] / r["population_correction"] for r in rows]
        ),
        "var_fit": log_log_fit(sizes, [r["var_spread"] for r in rows]),
    }


def batch_statistics_spread(model: nn.Module, samples: int, seed: int) -> dict:
    """Spread of mini-batch means and variances of every BN's input, over `samples` batches.

    Batches are drawn without replacement from the training set, as a shuffled loader does.
    Spreads are in units of each unit's training-set std (means) or variance (variances),
    averaged over units.
    """
    train = scaled(digits_split().train)
    activations = inputs_of(model, modules_of(model, nn.BatchNorm1d), features_of(train))
    rng = np.random.default_rng(seed)
    layers = [_layer_spread(x.double().numpy(), samples, rng) for x in activations]
    return {"layers": layers, "samples": samples}


def run(cfg: LabConfig) -> dict:
    """Gaps for every variant, batch size and seed; spreads from the BN model at the middle size."""
    records, spread_model = [], None
    middle = cfg.batch_sizes[len(cfg.batch_sizes) // 2]
    for variant in VARIANTS:
        for batch_size in cfg.batch_sizes:
            for seed in cfg.seeds:
                record, model = gap_run(
                    variant["bn"], variant["dropout"], batch_size, seed, cfg.gap_epochs
                )
                records.append(record)
                if variant["bn"] and not variant["dropout"] and batch_size == middle and seed == 0:
                    spread_model = model
    assert spread_model is not None
    with torch.no_grad():
        spread = batch_statistics_spread(spread_model, cfg.sample_batches, seed=0)
    return {"gaps": records, "summary": summarize_gaps(records), "spread": spread}
