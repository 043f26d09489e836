"""Test time: one example has no mini-batch, so which statistics should BN normalize with?

The project's digits MLP (input BN, BN after each hidden Linear, dropout), trained as `foldserve
train` trains it, is evaluated on the test split with BN normalizing by
- the statistics of the test batch itself, for batches of 1, 2, 8 and 32 examples;
- its running averages (what eval mode uses);
- precise statistics (`training.precise_bn`);
- the folded network (`training.fold`), which must predict exactly what the running statistics do.
Then the running-average momentum: short runs at several momenta, before and after precise BN.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from service import defaults
from training.fold import fold_batchnorm
from training.lab.config import LabConfig
from training.lab.experiments.common import (
    CPU,
    digits_split,
    eval_loader,
    features_of,
    fit_default,
    mean_std,
    seeded,
    set_bn_momentum,
)
from training.lab.experiments.nets import production_mlp
from training.precise_bn import recompute_bn_statistics
from training.train import evaluate

OWN_BATCH_SIZES = (1, 2, 8, 32)


def production_bn_model(seed: int, epochs: int, momentum: float | None = None) -> nn.Module:
    """The `foldserve train` default MLP, trained on raw digits for `epochs` epochs."""
    split = digits_split()
    model = seeded(seed, production_mlp, hidden_bn=True, dropout=defaults.DROPOUT, input_bn=True)
    if momentum is not None:
        set_bn_momentum(model, momentum)
    fit_default(model, split.train, split.val, epochs, defaults.BATCH_SIZE, seed)
    return model.eval()


@torch.no_grad()
def own_batch_accuracy(model: nn.Module, batch_size: int, seed: int) -> float:
    """Test accuracy when every BN normalizes with the statistics of the batch being predicted.

    The model stays in eval mode (dropout off); a forward hook replaces each BN's output by the
    batch-statistics one. With one example its variance is 0 and every input maps to β, so the
    network predicts one class whatever it is shown (torch's BN refuses such a batch in
    training mode; its kernel computes it all the same).
    """
    split = digits_split()
    x, labels = features_of(split.test), torch.from_numpy(split.test.labels)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    hooks = [
        m.register_forward_hook(
            lambda bn, args, _: torch.batch_norm(
                args[0], bn.weight, bn.bias, None, None, True, 0.0, bn.eps, False
            )
        )
        for m in model.modules()
        if isinstance(m, nn.BatchNorm1d)
    ]
    try:
        correct = 0
        for batch in order.split(batch_size):
            correct += int((model(x[batch]).argmax(1) == labels[batch]).sum())
    finally:
        for hook in hooks:
            hook.remove()
    return correct / len(labels)


@torch.no_grad()
def folded_check(model: nn.Module) -> dict:
    """Test accuracy of `model` (eval mode) and of its fold, and how far their logits differ."""
    test = digits_split().test
    x, labels = features_of(test), torch.from_numpy(test.labels)
    folded = fold_batchnorm(model, example_inputs=(x[:2],)).module
    logits, folded_logits = model(x), folded(x)
    return {
        "running_accuracy": float((logits.argmax(1) == labels).double().mean()),
        "folded_accuracy": float((folded_logits.argmax(1) == labels).double().mean()),
        "same_predictions": bool((logits.argmax(1) == folded_logits.argmax(1)).all()),
        "max_logit_difference": float((logits - folded_logits).abs().max()),
    }


def one_seed(seed: int, epochs: int) -> dict:
    split = digits_split()
    model = production_bn_model(seed, epochs)
    record = {"seed": seed, "own_batch": {}}
    for size in OWN_BATCH_SIZES:
        record["own_batch"][str(size)] = own_batch_accuracy(model, size, seed)
    record["moving_average"] = folded_check(model)
    changes = recompute_bn_statistics(model, eval_loader(split.train), CPU)
    record["precise"] = folded_check(model)
    record["precise_changes"] = [c.as_dict() for c in changes]
    return record


def momentum_run(momentum: float, seed: int, epochs: int) -> dict:
    split = digits_split()
    model = production_bn_model(seed, epochs, momentum)
    _, moving = evaluate(model, eval_loader(split.test), CPU)
    changes = recompute_bn_statistics(model, eval_loader(split.train), CPU)
    _, precise = evaluate(model, eval_loader(split.test), CPU)
    return {
        "momentum": momentum,
        "seed": seed,
        "moving_average_accuracy": moving,
        "precise_accuracy": precise,
        "max_mean_shift_std": max(c.mean_shift_max for c in changes),
    }


def run(cfg: LabConfig) -> dict:
    """Each seed's test-time comparison, then every momentum at every seed (short runs)."""
    seeds = [one_seed(seed, cfg.model_epochs) for seed in cfg.seeds]
    momenta = [momentum_run(m, s, cfg.short_epochs) for m in cfg.momenta for s in cfg.seeds]
    summary = {
        "own_batch": {
            size: mean_std([r["own_batch"][size] for r in seeds]) for size in seeds[0]["own_batch"]
        },
        **{
            f"{stats}_{key}": mean_std([r[stats][key] for r in seeds])
            for stats in ("moving_average", "precise")
            for key in ("running_accuracy", "folded_accuracy")
        },
        "all_same_predictions": all(
            r[stats]["same_predictions"] for r in seeds for stats in ("moving_average", "precise")
        ),
        "max_logit_difference": max(
            r[stats]["max_logit_difference"]
            for r in seeds
            for stats in ("moving_average", "precise")
        ),
        "momentum": [
            {
                "momentum": m,
                **{
                    key: mean_std([r[key] for r in momenta if r["momentum"] == m])
                    for key in ("moving_average_accuracy", "precise_accuracy", "max_mean_shift_std")
                },
            }
            for m in cfg.momenta
        ],
    }
    return {
        "seeds": seeds,
        "momentum_runs": momenta,
        "summary": summary,
        "epochs": cfg.model_epochs,
    }
