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

from foldserve.training import distributed
from foldserve.training.defaults import (
    ARCH,
    EPOCHS,
    LEARNING_RATE,
    OPTIMIZER,
    OPTIMIZERS,
    WEIGHT_DECAY,
)
from foldserve.training.distributed import Workers

# Learning-rate schedules `fit` knows: the one-cycle default, or a constant rate (the lab compares
# learning speed at fixed rates, as Ioffe & Szegedy did, which a warm-up would blur).
SCHEDULES = ("one-cycle", "constant")


@dataclass(frozen=True)
class FitSettings:
    epochs: int = EPOCHS[ARCH]
    learning_rate: float = LEARNING_RATE
    optimizer: str = OPTIMIZER
    weight_decay: float = WEIGHT_DECAY
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
    workers: Workers = distributed.ONE_WORKER,
    on_step: StepCallback | None = None,
) -> History:
    """Train with mini-batches (BN in train mode) under a one-cycle (or constant) learning rate.

    Args:
        on_step: called after every optimizer step (for measurements during training); it may
            run the model, but must leave its weights, buffers and mode as it found them.

    With several workers (`torchrun`) every worker reads the same global batches from
    `train_loader` and trains on its share of each, under DistributedDataParallel; `model` is
    trained in place and comes back a plain module (SyncBatchNorm, used on GPUs, undone).

    Returns:
        One record per epoch: training loss and accuracy (batch statistics, over all workers),
        validation loss and accuracy (running statistics, this worker's).
    """
    model.to(device)
    net = distributed.wrap(model, workers, device)
    optimizer = make_optimizer(net, settings)
    steps = settings.epochs * (1 if settings.dry_run else len(train_loader))
    schedule = make_schedule(optimizer, settings, max(steps, 1))
    history = History()
    quiet = not settings.progress or not workers.writes_files
    bar = tqdm(range(1, settings.epochs + 1), disable=quiet, unit="epoch")
    for epoch in bar:
        train_loss, train_accuracy = _train_epoch(
            net,
            train_loader,
            optimizer,
            schedule,
            device,
            settings.dry_run,
            workers,
            epoch,
            on_step,
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
    distributed.unwrap(model)
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
    workers: Workers = distributed.ONE_WORKER,
    epoch: int = 1,
    on_step: StepCallback | None = None,
) -> tuple[float, float]:
    """One pass over `loader` in train mode; returns the mean loss and accuracy it saw (summed
    over every worker's share of each global batch)."""
    model.train()
    totals = torch.zeros(3, dtype=torch.float64)  # loss, correct, count
    first_step = (epoch - 1) * (1 if dry_run else len(loader))
    for batch, (features, labels) in enumerate(loader, start=1):
        global_count = len(labels)
        part = workers.share(global_count)
        features, labels = features[part].to(device), labels[part].to(device)
        logits = model(features)
        loss = _shard_loss(logits, labels, global_count, workers)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        # loss × examples it stands for = this share's summed loss
        shown = len(labels) if not workers.distributed else global_count / workers.world_size
        correct = int((logits.argmax(dim=1) == labels).sum())
        totals += torch.tensor([loss.item() * shown, correct, len(labels)], dtype=torch.float64)
        if on_step is not None:
            on_step(Step(first_step + batch, epoch, loss.item(), features, labels))
        if dry_run:
            break
    loss_sum, correct, count = workers.all_reduce_sum(totals.to(device)).tolist()
    return loss_sum / count, correct / count


def _shard_loss(
    logits: torch.Tensor, labels: torch.Tensor, global_count: int, workers: Workers
) -> torch.Tensor:
    """The loss whose gradient, averaged over the workers by DDP, is the gradient of the global
    batch's mean loss: sum over this share × workers / examples in the global batch (shares may
    differ by one example). One worker: the plain mean."""
    if not workers.distributed:
        return nn.functional.cross_entropy(logits, labels)
    loss_sum = nn.functional.cross_entropy(logits, labels, reduction="sum")
    return loss_sum * workers.world_size / global_count
