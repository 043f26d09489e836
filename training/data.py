"""Data for training: the shared data sets (see `foldserve.datasets`) as torch loaders."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from foldserve.datasets import DataError, Dataset, Split, load_dataset, split_dataset

__all__ = [
    "DataError",
    "Dataset",
    "Split",
    "as_tensors",
    "load_dataset",
    "make_loader",
    "split_dataset",
]


def as_tensors(dataset: Dataset, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features reshaped to `(N, *input_shape)` float32 and labels as int64 tensors."""
    features = np.ascontiguousarray(dataset.features.reshape((len(dataset), *input_shape)))
    return torch.from_numpy(features), torch.from_numpy(dataset.labels)


def make_loader(
    dataset: Dataset,
    input_shape: tuple[int, ...],
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    workers: int = 1,
    part: slice | None = None,
) -> DataLoader:
    """A single-process loader; shuffling draws from its own seeded generator (reproducible).

    Args:
        dataset: the examples.
        input_shape: shape of one example as the network takes it.
        batch_size: examples per batch (with several training workers: the global batch, which
            each worker then shares).
        shuffle: reshuffle every epoch (training) or keep the order (evaluation).
        seed: seed of the shuffling generator.
        workers: training workers sharing each batch (for which last batch is dropped).
        part: only these examples (a worker's part of the set), in order.
    """
    generator = torch.Generator().manual_seed(seed)
    features, labels = as_tensors(dataset, input_shape)
    if part is not None:
        features, labels = features[part], labels[part]
    tensors = TensorDataset(features, labels)
    # drop_last avoids a final batch that would give a worker one example (or none), whose BN
    # batch variance would be zero.
    remainder = len(labels) % batch_size
    drop_last = shuffle and 0 < remainder < 2 * workers
    order = RandomSampler(tensors, generator=generator) if shuffle else SequentialSampler(tensors)
    # Whole batches are sliced out of the tensors at once (batch_size=None, a batch sampler)
    # rather than gathered example by example and stacked: the same batches in the same order
    # as DataLoader(batch_size=..., shuffle=...), at a fraction of the cost per batch. The loader
    # keeps the generator too, since it draws its per-epoch seed from it, as that one does.
    return DataLoader(
        tensors,
        batch_size=None,
        sampler=BatchSampler(order, batch_size, drop_last),
        generator=generator,
    )
