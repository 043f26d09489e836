"""Example data sets, torch-free: the embedded digits set, CSV and NPZ files, and a seeded split.

Both halves read data the same way: training fits on it, and `foldserve predict` replays the very
same test split against a server. So this module needs only numpy (scikit-learn only for digits,
whose data ships inside that package), and lives on the serving side, which training may import.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foldserve.contract.data import DIGITS, LABEL_COLUMN, SPLIT_SEED, TEST_FRACTION, VAL_FRACTION

MIN_ROWS_PER_CLASS = 3  # one each for train, validation and test


DIGITS_IMAGE_SHAPE = (1, 8, 8)
SEMICOLON_HINT = "it looks semicolon-separated; foldserve reads comma-separated CSV"


class DataError(ValueError):
    """A data set that cannot be used, with a message naming the file, column or row."""


@dataclass(frozen=True)
class Dataset:
    """Features (float32, one row per example, flat) with integer labels into `class_labels`."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    class_labels: list[str]
    image_shape: tuple[int, ...] | None = None
    feature_names: list[str] = field(default_factory=list)

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    def subset(self, indices: np.ndarray) -> Dataset:
        return Dataset(
            self.name,
            self.features[indices],
            self.labels[indices],
            self.class_labels,
            self.image_shape,
            self.feature_names,
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Split:
    train: Dataset
    val: Dataset
    test: Dataset


def load_dataset(source: str, label_column: str = LABEL_COLUMN) -> Dataset:
    """Load `digits`, a CSV file (numeric features plus `label_column`) or an NPZ file (`X`, `y`).

    Raises:
        DataError: missing file or column, a non-numeric or non-finite value, a single class.
    """
    if source == DIGITS:
        return _load_digits()
    path = Path(source)
    if not path.is_file():
        raise DataError(f"data file {source!r} does not exist (expected 'digits', a .csv or .npz)")
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    if path.suffix.lower() == ".csv":
        return _load_csv(path, label_column)
    raise DataError(f"data file {source!r}: unknown format {path.suffix!r} (expected .csv or .npz)")


def _load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # serving-only install
        raise DataError(
            "the digits data set ships with scikit-learn: install the train extra (`make venv`, "
            "or `pip install -e '.[train]'` in a checkout) or pass a .csv/.npz data file"
        ) from exc
    bunch = load_digits()
    return Dataset(
        DIGITS,
        np.asarray(bunch.data, dtype=np.float32),
        np.asarray(bunch.target, dtype=np.int64),
        [str(c) for c in bunch.target_names],
        DIGITS_IMAGE_SHAPE,
        [f"pixel_{i}_{j}" for i in range(8) for j in range(8)],
    )


def _load_npz(path: Path) -> Dataset:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    with archive:
        missing = [key for key in ("X", "y") if key not in archive.files]
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}; found {archive.files}")
        raw_features, raw_labels = archive["X"], archive["y"]
    if raw_features.ndim < 2:
        raise DataError(f"{path}: X must have one row per example, got shape {raw_features.shape}")
    if raw_labels.ndim != 1 or raw_labels.shape[0] != raw_features.shape[0]:
        raise DataError(
            f"{path}: y must be 1-D with one label per row of X "
            f"(X has {raw_features.shape[0]} rows, y has shape {raw_labels.shape})"
        )
    try:
        values = raw_features.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: X is not numeric ({raw_features.dtype})") from exc
    _check_finite(path, values)
    features = values.reshape(raw_features.shape[0], -1)
    image_shape = tuple(raw_features.shape[1:]) if raw_features.ndim > 2 else None
    labels, class_labels = _encode_labels(path, [str(v) for v in raw_labels.tolist()])
    return Dataset(path.name, features, labels, class_labels, image_shape)


def _load_csv(path: Path, label_column: str) -> Dataset:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file (expected a header row)")
        header = [name.strip() for name in header]
        if label_column not in header:
            raise DataError(
                f"{path}: no label column {label_column!r}; columns are {header} "
                f"(choose one with --label-column){_semicolon_hint(header)}"
            )
        label_index = header.index(label_column)
        feature_names = [name for i, name in enumerate(header) if i != label_index]
        if not feature_names:
            raise DataError(f"{path}: no feature columns besides the label {label_column!r}")
        rows: list[list[float]] = []
        raw_labels: list[str] = []
        for row in reader:
            # The file's line where this row ends: a quoted value may hold line breaks.
            where = f"{path}, line {reader.line_num}"
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{where}: {len(row)} values, expected {len(header)}{_semicolon_hint(row)}"
                )
            raw_labels.append(row[label_index].strip())
            rows.append(_parse_row(where, row, header, label_index))
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    features = np.asarray(rows, dtype=np.float32)
    labels, class_labels = _encode_labels(path, raw_labels)
    return Dataset(path.name, features, labels, class_labels, None, feature_names)


def _semicolon_hint(cells: list[str]) -> str:
    return f"; {SEMICOLON_HINT}" if any(";" in cell for cell in cells) else ""


def _parse_row(where: str, row: list[str], header: list[str], label_index: int) -> list[float]:
    values = []
    for i, cell in enumerate(row):
        if i == label_index:
            continue
        try:
            value = float(cell)
        except ValueError:
            raise DataError(
                f"{where}, column {header[i]!r}: {cell!r} is not a number{_semicolon_hint([cell])}"
            ) from None
        if not math.isfinite(value):
            raise DataError(f"{where}, column {header[i]!r}: {cell!r} is not finite")
        values.append(value)
    return values


def _check_finite(path: Path, values: np.ndarray) -> None:
    # Rows are numbered from 1 (row 1 = the first example), as a user counts them; the numpy
    # index into X (from 0) follows, so either reading finds the value.
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        index = tuple(int(v) for v in bad[0])
        raise DataError(
            f"{path}, row {index[0] + 1} (counting from 1; X[{', '.join(map(str, index))}]): "
            f"{values[index]} is not finite (NaN or infinity)"
        )


def _encode_labels(path: Path, raw_labels: list[str]) -> tuple[np.ndarray, list[str]]:
    def order(label: str) -> tuple[int, float | str]:
        try:
            return (0, float(label))
        except ValueError:
            return (1, label)

    class_labels = sorted(set(raw_labels), key=order)
    if len(class_labels) < 2:
        raise DataError(
            f"{path}: only one class ({class_labels}) in the labels; need at least two to classify"
        )
    index = {label: i for i, label in enumerate(class_labels)}
    return np.asarray([index[label] for label in raw_labels], dtype=np.int64), class_labels


def split_dataset(
    dataset: Dataset,
    seed: int = SPLIT_SEED,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> Split:
    """Split stratified by class, reproducibly for a seed: every class keeps its proportion.

    Raises:
        DataError: a class has fewer rows than the three parts (train, validation, test) need.
    """
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise DataError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must each lie in "
            "(0, 1) and sum to less than 1"
        )
    counts = np.bincount(dataset.labels, minlength=len(dataset.class_labels))
    if counts.min() < MIN_ROWS_PER_CLASS:
        scarce = [dataset.class_labels[i] for i in np.flatnonzero(counts < MIN_ROWS_PER_CLASS)]
        raise DataError(
            f"{dataset.name}: {len(dataset)} rows for {len(counts)} classes; every class needs at "
            f"least {MIN_ROWS_PER_CLASS} rows (one each for train, validation and test), "
            f"but class(es) {scarce[:10]} have fewer"
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in range(len(dataset.class_labels)):
        members = rng.permutation(np.flatnonzero(dataset.labels == label))
        n_test = max(1, round(len(members) * test_fraction))
        n_val = max(1, round(len(members) * val_fraction))
        n_test = min(n_test, len(members) - 2)
        n_val = min(n_val, len(members) - n_test - 1)  # at least one row stays for training
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    subsets = {name: dataset.subset(np.sort(np.concatenate(idx))) for name, idx in parts.items()}
    return Split(subsets["train"], subsets["val"], subsets["test"])
