"""The training loop: fit a BN network with mini-batches, evaluate, and keep a history."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from service import defaults
from service.defaults import OPTIMIZERS

# Learning-rate schedules `fit` knows: the one-cycle default, or a constant rate (the lab compares
# learning speed at fixed rates, as Ioffe & Szegedy did, which a warm-up would blur).
SCHEDULES = ("one-cycle", "constant")


@dataclass(frozen=True)
class FitSettings:
    epochs: int = defaults.EPOCHS[defaults.ARCH]
    learning_rate: float = defaults.LEARNING_RATE
    optimizer: str = defaults.OPTIMIZER
    weight_decay: float = defaults.WEIGHT_DECAY
    progress: bool = True
    dry_run: bool = False  # one batch per epoch: for smoke tests
    schedule: str = "one-cycle"


@dataclass(frozen=True)
class Step:
    """One optimizer step, as `fit` reports it to an `on_step` callback (after the update).

    Attributes:
        index: steps taken so far, counting from 1 over the whole fit.
        epoch: the epoch the step belongs to, from 1.
        loss: the mini-batch loss before the update.
        features, labels: the mini-batch (on the training device).
    """

    index: int
    epoch: int
    loss: float
    features: torch.Tensor
    labels: torch.Tensor


StepCallback = Callable[[Step], None]


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed every generator the training run draws from, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def make_optimizer(model: nn.Module, settings: FitSettings) -> torch.optim.Optimizer:
    params = model.parameters()
    if settings.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=settings.learning_rate,
            momentum=0.9,
            nesterov=True,
            weight_decay=settings.weight_decay,
        )
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {settings.optimizer!r}")


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` in eval mode (running BN statistics).

    Returns:
        (loss, accuracy) over every example the loader yields.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for features, labels in loader:
        features, labels = features.to(device), labels.to(device)
        logits = model(features)
        total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == labels).sum())
        count += len(labels)
    model.train(was_training)
    return total_loss / count, correct / count


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    settings: FitSettings,
    device: torch.device,
    on_step: StepCallback | None = None,
) -> History:
    """Train with mini-batches (BN in train mode) under a one-cycle (or constant) learning rate.

    Args:
        on_step: called after every optimizer step (for measurements during training); it may
            run the model, but must leave its weights, buffers and mode as it found them.

    Returns:
        One record per epoch: training loss and accuracy (batch statistics), validation loss and
        accuracy (running statistics).
    """
    model.to(device)
    optimizer = make_optimizer(model, settings)
    steps = settings.epochs * (1 if settings.dry_run else len(train_loader))
    schedule = make_schedule(optimizer, settings, max(steps, 1))
    history = History()
    bar = tqdm(range(1, settings.epochs + 1), disable=not settings.progress, unit="epoch")
    for epoch in bar:
        train_loss, train_accuracy = _train_epoch(
            model, train_loader, optimizer, schedule, device, settings.dry_run, epoch, on_step
        )
        val_loss, val_accuracy = evaluate(model, val_loader, device)
        history.epochs.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
            }
        )
        bar.set_postfix(
            loss=f"{train_loss:.4f}", acc=f"{train_accuracy:.4f}", val_acc=f"{val_accuracy:.4f}"
        )
    return history


def make_schedule(
    optimizer: torch.optim.Optimizer, settings: FitSettings, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule `settings.schedule` names, stepped once per optimizer step."""
    if settings.schedule == "one-cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=settings.learning_rate, total_steps=total_steps
        )
    if settings.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {settings.schedule!r}")


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    dry_run: bool,
    epoch: int = 1,
    on_step: StepCallback | None = None,
) -> tuple[float, float]:
    """One pass over `loader` in train mode; returns the mean loss and accuracy it saw."""
    model.train()
    total_loss, correct, count = 0.0, 0, 0
    first_step = (epoch - 1) * (1 if dry_run else len(loader))
    for batch, (features, labels) in enumerate(loader, start=1):
        features, labels = features.to(device), labels.to(device)
        logits = model(features)
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(dim=1) == labels).sum())
        count += len(labels)
        if on_step is not None:
            on_step(Step(first_step + batch, epoch, loss.item(), features, labels))
        if dry_run:
            break
    return total_loss / count, correct / count
