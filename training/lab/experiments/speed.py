"""Learning speed and distribution stability (Ioffe & Szegedy's Figure 1), with Santurkar's noise.

Every run trains the Figure 1 MLP with SGD at a constant rate and records, every few steps: the
validation loss and accuracy; the 15th/50th/85th percentiles of one last-hidden-layer sigmoid's
input (eval mode, Figure 1(b, c)); how far each unit's input moved since the last measurement as
the layers see it in training (batch statistics, injected noise). At every epoch's end it records
each hidden layer's sigmoid-input mean and spread (eval mode), for the per-epoch drift; at the
reference rate it also probes smoothness and coupling (`smoothness`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from foldserve.training.lab.config import LabConfig
from foldserve.training.lab.experiments import smoothness
from foldserve.training.lab.experiments.common import (
    CPU,
    digits_split,
    eval_loader,
    features_of,
    inputs_of,
    loader,
    mean_std,
    modules_of,
    scaled,
)
from foldserve.training.lab.experiments.nets import figure1_mlp
from foldserve.training.train import FitSettings, Step, evaluate, fit, seed_everything

BATCH_SIZE = 60  # Ioffe & Szegedy's mini-batch
TARGET_ACCURACY = 0.95  # validation accuracy that counts as "learned"
PERCENTILES = (15, 50, 85)
UNIT = 0  # the "typical sigmoid" of Figure 1(b, c): unit 0 of the last hidden layer


class Recorder:
    """The `fit` callback that takes every measurement of one run."""

    def __init__(self, model: nn.Module, cfg: LabConfig, steps_per_epoch: int, probe: bool):
        split = digits_split()
        self.model, self.cfg, self.probe = model, cfg, probe
        self.steps_per_epoch = steps_per_epoch
        self.val_loader = eval_loader(scaled(split.val))
        self.probe_x = features_of(scaled(split.val))
        self.sigmoids = modules_of(model, nn.Sigmoid)
        self.curve: dict[str, list] = {
            k: [] for k in ("step", "val_loss", "val_accuracy", "train_loss", "percentiles")
        }
        self.train_view: dict[str, list] = {"percentiles": [], "mean_shift": [], "std_change": []}
        self.epochs: list[list[tuple[np.ndarray, np.ndarray]]] = []
        self.probes: list[dict] = []
        self._losses: list[float] = []
        self._last_train_view: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, step: Step) -> None:
        self._losses.append(step.loss)
        if step.index % self.cfg.eval_every == 0:
            self._evaluate(step.index)
        if step.index % self.steps_per_epoch == 0:
            self.epochs.append(_moments(inputs_of(self.model, self.sigmoids, self.probe_x)))
        if self.probe and step.index % self.cfg.probe_every == 0:
            self._probe(step)

    def _evaluate(self, index: int) -> None:
        val_loss, val_accuracy = evaluate(self.model, self.val_loader, CPU)
        last = inputs_of(self.model, self.sigmoids[-1:], self.probe_x)[0][:, UNIT]
        self.curve["step"].append(index)
        self.curve["val_loss"].append(val_loss)
        self.curve["val_accuracy"].append(val_accuracy)
        self.curve["train_loss"].append(float(np.mean(self._losses)))
        self.curve["percentiles"].append(_percentiles(last))
        self._losses = []
        seen = inputs_of(self.model, self.sigmoids[-1:], self.probe_x, train_view=True)[0]
        self.train_view["percentiles"].append(_percentiles(seen[:, UNIT]))
        mean, std = seen.mean(0).numpy(), seen.std(0).numpy()
        if self._last_train_view is not None:
            shift, change = _drift(self._last_train_view, (mean, std))
            self.train_view["mean_shift"].append(shift)
            self.train_view["std_change"].append(change)
        self._last_train_view = (mean, std)

    def _probe(self, step: Step) -> None:
        record = {"step": step.index}
        record.update(smoothness.landscape(self.model, step.features, step.labels))
        record["coupling"] = smoothness.coupling(
            self.model, step.features, step.labels, self.cfg.reference_lr
        )
        self.probes.append(record)

    def epoch_drift(self) -> dict[str, list[list[float]]]:
        """Per hidden layer, per epoch after the first: mean shift (in stds) and |log std ratio|."""
        layers = len(self.sigmoids)
        shifts: list[list[float]] = [[] for _ in range(layers)]
        changes: list[list[float]] = [[] for _ in range(layers)]
        for before, after in zip(self.epochs, self.epochs[1:], strict=False):
            for layer in range(layers):
                shift, change = _drift(before[layer], after[layer])
                shifts[layer].append(shift)
                changes[layer].append(change)
        return {"mean_shift": shifts, "std_change": changes}


def _percentiles(values: torch.Tensor) -> list[float]:
    return [float(v) for v in np.percentile(values.numpy(), PERCENTILES)]


def _moments(inputs: list[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.mean(0).numpy(), x.std(0).numpy()) for x in inputs]


def _drift(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray]):
    """Mean over units of |Δ mean| / old std, and of |log(new std / old std)|."""
    (mean0, std0), (mean1, std1) = before, after
    std0, std1 = np.maximum(std0, 1e-6), np.maximum(std1, 1e-6)
    return float(np.mean(np.abs(mean1 - mean0) / std0)), float(np.mean(np.abs(np.log(std1 / std0))))


def train_one(kind: str, lr: float, seed: int, cfg: LabConfig, probe: bool = False) -> dict:
    """One seeded run of the Figure 1 MLP (`kind` from `nets.KINDS`) at SGD rate `lr`."""
    seed_everything(seed)
    model = figure1_mlp(kind, seed)
    split = digits_split()
    train_loader = loader(scaled(split.train), BATCH_SIZE, seed)
    epochs = max(1, cfg.steps // len(train_loader))
    recorder = Recorder(model, cfg, len(train_loader), probe)
    settings = FitSettings(
        epochs=epochs,
        learning_rate=lr,
        optimizer="sgd",
        weight_decay=0.0,
        progress=False,
        schedule="constant",
    )
    fit(model, train_loader, recorder.val_loader, settings, CPU, on_step=recorder)
    _, test_accuracy = evaluate(model, eval_loader(scaled(split.test)), CPU)
    curve = recorder.curve
    pairs = zip(curve["step"], curve["val_accuracy"], strict=True)
    reached = [step for step, accuracy in pairs if accuracy >= TARGET_ACCURACY]
    return {
        "kind": kind,
        "lr": lr,
        "seed": seed,
        "steps": epochs * len(train_loader),
        "curve": curve,
        "train_view": recorder.train_view,
        "epoch_drift": recorder.epoch_drift(),
        "probes": recorder.probes,
        "steps_to_target": reached[0] if reached else None,
        "final_val_accuracy": curve["val_accuracy"][-1],
        "final_val_loss": curve["val_loss"][-1],
        "test_accuracy": test_accuracy,
        "diverged": not all(math.isfinite(v) for v in curve["train_loss"]),
    }


def run(cfg: LabConfig, kinds: tuple[str, ...]) -> list[dict]:
    """Every kind at every learning rate and seed; smoothness probes at the reference rate."""
    return [
        train_one(kind, lr, seed, cfg, probe=lr == cfg.reference_lr and kind != "noisy-bn")
        for kind in kinds
        for lr in cfg.learning_rates
        for seed in cfg.seeds
    ]


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (kind, rate): steps to the target accuracy and final accuracies over seeds."""
    rows = []
    for kind in dict.fromkeys(r["kind"] for r in runs):
        for lr in dict.fromkeys(r["lr"] for r in runs if r["kind"] == kind):
            group = [r for r in runs if r["kind"] == kind and r["lr"] == lr]
            steps = [r["steps_to_target"] for r in group if r["steps_to_target"] is not None]
            rows.append(
                {
                    "kind": kind,
                    "lr": lr,
                    "runs": len(group),
                    "reached": len(steps),
                    "steps_to_target": mean_std(steps),
                    "final_val_accuracy": mean_std([r["final_val_accuracy"] for r in group]),
                    "test_accuracy": mean_std([r["test_accuracy"] for r in group]),
                    "diverged": sum(r["diverged"] for r in group),
                    "steps": group[0]["steps"],
                }
            )
    return rows


def stability(runs: list[dict], lr: float) -> list[dict]:
    """Per kind at rate `lr`: how far the sigmoid inputs moved, per epoch and per measurement.

    `epoch_mean_shift`/`epoch_std_change`: per hidden layer, the mean over epochs (eval mode);
    `early_mean_shift`: the same over the first five epochs only; `train_view_*`: the last
    hidden layer between consecutive measurements, as the next layer sees it during training
    (the median over measurements: a plain network's first few steps would dominate a mean).
    """
    rows = []
    for kind in dict.fromkeys(r["kind"] for r in runs):
        group = [r for r in runs if r["kind"] == kind and r["lr"] == lr]
        drift = [r["epoch_drift"] for r in group]
        layers = len(drift[0]["mean_shift"])
        rows.append(
            {
                "kind": kind,
                "epoch_mean_shift": [
                    mean_std([float(np.mean(d["mean_shift"][i])) for d in drift])
                    for i in range(layers)
                ],
                "early_mean_shift": [
                    mean_std([float(np.mean(d["mean_shift"][i][:5])) for d in drift])
                    for i in range(layers)
                ],
                "epoch_std_change": [
                    mean_std([float(np.mean(d["std_change"][i])) for d in drift])
                    for i in range(layers)
                ],
                "train_view_mean_shift": mean_std(
                    [float(np.median(r["train_view"]["mean_shift"])) for r in group]
                ),
                "train_view_std_change": mean_std(
                    [float(np.median(r["train_view"]["std_change"])) for r in group]
                ),
            }
        )
    return rows


def smoothness_summary(runs: list[dict]) -> list[dict]:
    """Per probed kind: medians over training of each smoothness and coupling measure.

    Each seed contributes its median over the probes; the row holds mean ± std over seeds.
    """
    rows = []
    for kind in dict.fromkeys(r["kind"] for r in runs if r["probes"]):
        group = [r for r in runs if r["kind"] == kind and r["probes"]]
        row: dict = {"kind": kind, "probes": len(group[0]["probes"])}
        for key in ("loss_range", "grad_change", "beta", "grad_norm"):
            row[key] = mean_std([float(np.median([p[key] for p in r["probes"]])) for r in group])
        layers = len(group[0]["probes"][0]["coupling"])
        for key in ("relative", "cosine"):
            row[f"coupling_{key}"] = [
                mean_std(
                    [float(np.median([p["coupling"][i][key] for p in r["probes"]])) for r in group]
                )
                for i in range(layers)
            ]
        rows.append(row)
    return rows
