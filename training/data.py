"""Data for training: the shared data sets (see `service.datasets`) as torch loaders."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from service.datasets import DataError, Dataset, Split, load_dataset, split_dataset

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
    # drop_last avoids a final batch that would give a worker one example (or none), whose BN
    # batch variance would be zero.
    remainder = len(labels) % batch_size
    drop_last = shuffle and 0 < remainder < 2 * workers
    return DataLoader(
        TensorDataset(features, labels),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
    )
