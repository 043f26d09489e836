"""Data-parallel training under `torchrun`: who this worker is, its share of each global batch,
DistributedDataParallel with SyncBatchNorm on GPUs, and sums all-reduced across workers.

Every worker reads the same global batches (same seed, same shuffle) and trains on its own slice
of each; DDP averages the gradients, and the loss is scaled so that the average is the gradient
of the global batch's mean loss. `--batch-size` therefore stays the global batch: the same
hyperparameters give the same optimisation whatever the number of workers, up to BatchNorm.

BatchNorm in train mode normalizes each worker's slice with that slice's statistics. On GPUs the
BN layers become `SyncBatchNorm` for training, which normalizes with the global batch's statistics
(torch's SyncBatchNorm runs only on GPU-class devices), and turn back into plain BN layers before
the precise statistics, folding and export. On CPUs (gloo) the forward passes stay per worker;
either way the precise-BN pass then sums every BN's inputs over each worker's part of the
training set and all-reduces the sums, so the folded model carries exact global statistics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from foldserve.training.batchnorm import BN_TYPES


@dataclass(frozen=True)
class Workers:
    """This process's place among the training workers (one worker: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writes_files(self) -> bool:
        """Only rank 0 writes the history, checkpoint and model files."""
        return self.rank == 0

    def share(self, count: int) -> slice:
        """This worker's contiguous part of `count` items; parts differ by at most one item."""
        return slice(
            self.rank * count // self.world_size, (self.rank + 1) * count // self.world_size
        )

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over every worker, in place (a no-op for one worker); returns it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


ONE_WORKER = Workers()


def from_environment(environ: Mapping[str, str] | None = None) -> Workers:
    """The workers `torchrun` describes (RANK, WORLD_SIZE, LOCAL_RANK); one worker without it."""
    environ = os.environ if environ is None else environ
    return Workers(
        int(environ.get("RANK", 0)),
        int(environ.get("WORLD_SIZE", 1)),
        int(environ.get("LOCAL_RANK", 0)),
    )


def device_for(workers: Workers, device: torch.device) -> torch.device:
    """One GPU per worker on a node (cuda:LOCAL_RANK); the CPU stays the CPU."""
    if device.type == "cuda" and workers.distributed:
        torch.cuda.set_device(workers.local_rank)
        return torch.device("cuda", workers.local_rank)
    return device


def start(workers: Workers, device: torch.device) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPUs) from torchrun's environment."""
    if workers.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=workers.rank, world_size=workers.world_size)


def stop(workers: Workers) -> None:
    if workers.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, workers: Workers, device: torch.device) -> nn.Module:
    """The module to train: `model` itself for one worker, else DDP around it (after turning its
    BN layers into SyncBatchNorm on GPUs). `unwrap` undoes the SyncBatchNorm, in place."""
    if not workers.distributed:
        return model
    if device.type == "cuda":
        to_sync_batchnorm(model)
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def unwrap(model: nn.Module) -> None:
    """Turn SyncBatchNorm layers back into the BN layers they were (their statistics kept)."""
    for name, module in list(model.named_modules()):
        original = getattr(module, "_foldserve_bn_type", None)
        if isinstance(module, nn.SyncBatchNorm) and original is not None:
            plain = original(
                module.num_features, module.eps, module.momentum, module.affine,
                module.track_running_stats,
            )  # fmt: skip
            plain.load_state_dict(module.state_dict())
            _replace(model, name, plain.to(_device_of(module)))


def to_sync_batchnorm(model: nn.Module) -> None:
    """Replace, in place, every BN layer with a SyncBatchNorm that remembers its original type."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BN_TYPES) and not isinstance(module, nn.SyncBatchNorm):
            sync = nn.SyncBatchNorm(
                module.num_features, module.eps, module.momentum, module.affine,
                module.track_running_stats,
            )  # fmt: skip
            sync.load_state_dict(module.state_dict())
            sync._foldserve_bn_type = type(module)  # type: ignore[assignment]
            _replace(model, name, sync.to(_device_of(module)))


def _device_of(module: nn.Module) -> torch.device:
    tensors = [*module.parameters(), *module.buffers()]
    return tensors[0].device if tensors else torch.device("cpu")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    assert name, "the model itself is a BN layer: nothing to replace it in"
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
