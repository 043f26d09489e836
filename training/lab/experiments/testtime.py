"""Test time: one example has no mini-batch, so which statistics should BN normalize with?

The project's digits MLP (input BN, BN after each hidden Linear, dropout), trained as `foldserve
train` trains it, is evaluated on the test split with BN normalizing by
- the statistics of the test batch itself, for batches of 1, 2, 8 and 32 examples;
- its running averages (what eval mode uses);
- precise statistics (`foldserve.training.precise_bn`);
- the folded network (`training.fold`), which must predict exactly what the running statistics do.
Then the running-average momentum: short runs at several momenta, before and after precise BN.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from foldserve.training.defaults import BATCH_SIZE, DROPOUT
from foldserve.training.fold import fold_batchnorm
from foldserve.training.lab.config import LabConfig
from foldserve.training.lab.experiments.common import (
    CPU,
    digits_split,
    eval_loader,
    features_of,
    fit_default,
    mean_std,
    modules_of,
    seeded,
)
from foldserve.training.lab.experiments.nets import production_mlp
from foldserve.training.precise_bn import recompute_bn_statistics
from foldserve.training.train import evaluate

OWN_BATCH_SIZES = (1, 2, 8, 32)
DEFAULT_MOMENTUM = 0.1  # torch's BatchNorm default: the control for `RunningAverages`


def production_bn_model(seed: int, epochs: int) -> nn.Module:
    """The `foldserve train` default MLP, trained on raw digits for `epochs` epochs."""
    split = digits_split()
    model = seeded(seed, production_mlp, hidden_bn=True, dropout=DROPOUT, input_bn=True)
    fit_default(model, split.train, split.val, epochs, BATCH_SIZE, seed)
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


class RunningAverages:
    """Every BN's running averages at several momenta at once, from one training run.

    Training normalizes with batch statistics, so the weights a run learns do not depend on the
    momentum, only the averages do. A forward pre-hook sees every training batch's input to each
    BN and updates one average per momentum as BatchNorm does: running = (1 − m)·running +
    m·batch, with the batch variance unbiased.
    """

    def __init__(self, model: nn.Module, momenta: tuple[float, ...]) -> None:
        self.bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
        self.averages = {
            m: [(bn.running_mean.clone(), bn.running_var.clone()) for bn in self.bns]
            for m in momenta
        }
        self.handles = [
            bn.register_forward_pre_hook(lambda bn, args, i=i: self._update(bn, i, args[0]))
            for i, bn in enumerate(self.bns)
        ]

    @torch.no_grad()
    def _update(self, bn: nn.Module, index: int, x: torch.Tensor) -> None:
        if not bn.training:
            return
        batch_mean, batch_var = x.mean(0), x.var(0, unbiased=True)
        for m, layers in self.averages.items():
            mean, var = layers[index]
            mean.mul_(1 - m).add_(batch_mean, alpha=m)
            var.mul_(1 - m).add_(batch_var, alpha=m)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def load(self, momentum: float) -> None:
        """Put the averages for `momentum` into the model's BNs."""
        for bn, (mean, var) in zip(self.bns, self.averages[momentum], strict=True):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)


def _worst_mean_shift(model: nn.Module, precise: nn.Module) -> float:
    """Largest |moving − exact mean| / exact std over every BN channel."""
    pairs = zip(modules_of(model, nn.BatchNorm1d), modules_of(precise, nn.BatchNorm1d), strict=True)
    return max(
        float(((a.running_mean - b.running_mean).abs() / (b.running_var + b.eps).sqrt()).max())
        for a, b in pairs
    )


def momentum_runs(momenta: tuple[float, ...], seed: int, epochs: int) -> list[dict]:
    """One short run; its test accuracy with the running averages of every momentum."""
    split = digits_split()
    model = seeded(seed, production_mlp, hidden_bn=True, dropout=DROPOUT, input_bn=True)
    averages = RunningAverages(model, (*momenta, DEFAULT_MOMENTUM))
    try:
        fit_default(model, split.train, split.val, epochs, BATCH_SIZE, seed)
    finally:
        averages.remove()
    model.eval()
    own = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in averages.bns]
    precise = copy.deepcopy(model)
    recompute_bn_statistics(precise, eval_loader(split.train), CPU)
    _, precise_accuracy = evaluate(precise, eval_loader(split.test), CPU)
    records = []
    for momentum in momenta:
        averages.load(momentum)
        records.append(
            {
                "momentum": momentum,
                "seed": seed,
                "moving_average_accuracy": evaluate(model, eval_loader(split.test), CPU)[1],
                "precise_accuracy": precise_accuracy,
                "max_mean_shift_std": _worst_mean_shift(model, precise),
            }
        )
    # The hook's averages at BatchNorm's own momentum must be BatchNorm's own running averages.
    averages.load(DEFAULT_MOMENTUM)
    check = max(
        float((bn.running_mean - mean).abs().max())
        for bn, (mean, _) in zip(averages.bns, own, strict=True)
    )
    records[0]["hook_vs_batchnorm"] = check
    return records


def run(cfg: LabConfig) -> dict:
    """Each seed's test-time comparison, then every momentum at every seed (one short run per
    seed serves all momenta)."""
    seeds = [one_seed(seed, cfg.model_epochs) for seed in cfg.seeds]
    momenta = [r for s in cfg.seeds for r in momentum_runs(cfg.momenta, s, cfg.short_epochs)]
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
        "hook_vs_batchnorm": max(
            r["hook_vs_batchnorm"] for r in momenta if "hook_vs_batchnorm" in r
        ),
    }
    return {
        "seeds": seeds,
        "momentum_runs": momenta,
        "summary": summary,
        "epochs": cfg.model_epochs,
    }
