"""The sample `foldserve calibrate` and `foldserve adapt` read: a CSV, an NPZ, a directory of
tensors, or digits (torch-free: both halves use it).

Every form gives the examples, shaped as the model's input, and their labels when it has any
(strings; the caller matches them with the model's class labels).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from foldserve.datasets import DataError, load_dataset


def read_sample(
    data: str, example_shape: tuple[int, ...], label_column: str = "label"
) -> tuple[np.ndarray, np.ndarray | None]:
    """`[N, *example_shape]` float32 examples and their labels (None: the sample has none).

    Raises:
        DataError: a missing or unreadable file, non-numeric or non-finite values, or examples
            of another size than the model's input.
    """
    path = Path(data)
    if data == "digits":
        dataset = load_dataset(data)
        values, labels = dataset.features, np.array(dataset.class_labels)[dataset.labels]
    elif path.is_dir():
        values, labels = _tensors(path), None
    elif path.suffix.lower() == ".npz":
        values, labels = _npz(path)
    elif path.suffix.lower() == ".csv":
        values, labels = _csv(path, label_column)
    else:
        raise DataError(f"{data!r}: expected `digits`, a .csv, a .npz or a directory of .npy")
    return _shaped(values, example_shape, data), labels


def _shaped(values: np.ndarray, example_shape: tuple[int, ...], data: str) -> np.ndarray:
    size = int(np.prod(example_shape))
    values = np.asarray(values, np.float32)
    if values.ndim < 1 or values.size == 0 or values.size % size:
        raise DataError(
            f"{data}: {values.size} values do not make examples of shape {list(example_shape)}"
        )
    if not np.isfinite(values).all():
        raise DataError(f"{data}: non-finite values")
    return values.reshape(-1, *example_shape)


def _tensors(path: Path) -> np.ndarray:
    files = sorted(path.glob("*.npy"))
    if not files:
        raise DataError(f"{path}: no .npy files")
    try:
        return np.concatenate([np.load(f, allow_pickle=False).ravel() for f in files])
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable tensor ({exc})") from None


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive.files:
                raise DataError(f"{path}: no array X; found {archive.files}")
            labels = archive["y"].astype(str) if "y" in archive.files else None
            return archive["X"].astype(np.float32), labels
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray | None]:
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header row and data rows")
    header = [name.strip() for name in rows[0]]
    label = header.index(label_column) if label_column in header else None
    keep = [i for i in range(len(header)) if i != label]
    try:
        values = np.array([[float(row[i]) for i in keep] for row in rows[1:]], np.float32)
    except (ValueError, IndexError) as exc:
        raise DataError(f"{path}: a row that is not {len(header)} numbers ({exc})") from None
    labels = np.array([row[label].strip() for row in rows[1:]]) if label is not None else None
    return values, labels
