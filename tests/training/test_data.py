import re

import numpy as np
import pytest

from foldserve.training.data import DataError, Dataset, load_dataset, make_loader, split_dataset


def test_digits_is_embedded_and_split_stratified_and_reproducible():
    digits = load_dataset("digits")
    assert digits.features.shape == (1797, 64)
    assert digits.image_shape == (1, 8, 8)
    assert digits.class_labels == [str(i) for i in range(10)]
    first, again = split_dataset(digits, seed=0), split_dataset(digits, seed=0)
    other = split_dataset(digits, seed=1)
    assert np.array_equal(first.test.features, again.test.features)
    assert not np.array_equal(first.test.features, other.test.features)
    assert len(first.train) + len(first.val) + len(first.test) == 1797
    for part, fraction in ((first.test, 0.2), (first.val, 0.15)):
        counts = np.bincount(part.labels, minlength=10)
        expected = np.bincount(digits.labels, minlength=10) * fraction
        assert np.all(np.abs(counts - expected) <= 1)


def test_splits_are_disjoint():
    digits = load_dataset("digits")
    split = split_dataset(digits, seed=3)
    rows = {
        part: {row.tobytes() for row in getattr(split, part).features}
        for part in ("train", "val", "test")
    }
    # digits has a few duplicate images; disjoint indices keep overlaps to those.
    assert len(rows["test"] & rows["train"]) <= 5


def test_csv_with_label_column(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text("a,b,species\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n")
    data = load_dataset(str(path), label_column="species")
    assert data.features.dtype == np.float32
    assert data.features.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert data.class_labels == ["x", "y"]
    assert data.labels.tolist() == [0, 1, 0, 1]
    assert data.feature_names == ["a", "b"]


def test_npz_images_keep_their_shape(tmp_path):
    path = tmp_path / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.normal(size=(20, 1, 4, 4)), y=np.arange(20) % 2)
    data = load_dataset(str(path))
    assert data.features.shape == (20, 16)
    assert data.image_shape == (1, 4, 4)
    assert data.class_labels == ["0", "1"]


@pytest.mark.parametrize(
    ("content", "label_column", "message"),
    [
        (None, "label", "does not exist"),
        ("a,b\n1,2\n", "label", "no label column 'label'"),
        ("a,label\n1,x\nfoo,y\n", "label", "line 3, column 'a': 'foo' is not a number"),
        ("a,label\n1,x\nnan,y\n", "label", "line 3, column 'a': 'nan' is not finite"),
        ("a,label\ninf,x\n2,y\n", "label", "line 2, column 'a': 'inf' is not finite"),
        ('a,label\n1,"x\ny"\nfoo,y\n', "label", "line 4, column 'a'"),  # a quoted newline
        ("a,label\n1,x\n2,x\n", "label", "only one class"),
        ("a,label\n1,x\n2,\n", "label", None),  # an empty label is a class of its own: fine
        ("a,label\n1,x\n", "label", "only one class"),
        ("a,label\n", "label", "no data rows"),
        ("a,label\n1,x,3\n", "label", "line 2: 3 values, expected 2"),
    ],
)
def test_bad_csv_gets_a_clear_error(tmp_path, content, label_column, message):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    if message is None:
        load_dataset(str(path), label_column)
        return
    with pytest.raises(DataError, match=message) as info:
        load_dataset(str(path), label_column)
    assert "data.csv" in str(info.value)


def test_fewer_rows_than_a_split_needs(tmp_path):
    path = tmp_path / "few.npz"
    np.savez(path, X=np.ones((5, 3)), y=np.array([0, 0, 0, 1, 1]))
    data = load_dataset(str(path))
    with pytest.raises(DataError, match=r"few.npz: 5 rows for 2 classes.*\['1'\]"):
        split_dataset(data)
    np.savez(path, X=np.ones((6, 3)), y=np.array([0, 0, 0, 1, 1, 1]))
    split = split_dataset(load_dataset(str(path)))
    assert (len(split.train), len(split.val), len(split.test)) == (2, 2, 2)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.ones((3, 2))}, r"missing array\(s\) \['y'\]"),
        ({"X": np.ones((3, 2)), "y": np.array([0, 1])}, "one label per row"),
        (
            {"X": np.array([[1.0, np.nan], [2, 3]]), "y": np.array([0, 1])},
            r"data.npz, row 1 \(counting from 1; X\[0, 1\]\): nan is not finite",
        ),
        (
            {
                "X": np.where(np.arange(12).reshape(3, 1, 2, 2) == 9, np.inf, 1.0),
                "y": np.arange(3),
            },
            r"row 3 \(counting from 1; X\[2, 0, 0, 1\]\): inf is not finite",
        ),
        ({"X": np.array([[1.0, 2], [np.inf, 3]]), "y": np.array([0, 1])}, "not finite"),
        ({"X": np.ones((3, 2)), "y": np.array([1, 1, 1])}, "only one class"),
        ({"X": np.array([["a", "b"], ["c", "d"]]), "y": np.array([0, 1])}, "not numeric"),
        ({"X": np.ones(3), "y": np.array([0, 1, 0])}, "one row per example"),
    ],
)
def test_bad_npz_gets_a_clear_error(tmp_path, arrays, message):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_unreadable_and_unknown_files(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_dataset(str(broken))
    other = tmp_path / "data.parquet"
    other.write_bytes(b"")
    with pytest.raises(DataError, match=r"unknown format '\.parquet'"):
        load_dataset(str(other))


def test_loader_shapes_examples_for_the_network():
    split = split_dataset(load_dataset("digits"))
    features, labels = next(iter(make_loader(split.test, (1, 8, 8), 32, shuffle=False)))
    assert features.shape == (32, 1, 8, 8)
    assert labels.dtype.is_floating_point is False


@pytest.mark.parametrize(
    ("rows", "batch_size", "shuffle"), [(97, 8, True), (97, 32, False), (65, 8, True)]
)
def test_loader_batches_are_those_of_a_per_example_loader(rows, batch_size, shuffle):
    """Whole-batch slicing changes no batch and no order (65 % 8 == 1: the last one is dropped)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    features = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    dataset = Dataset("t", features, np.arange(rows) % 2, ["a", "b"])
    ours = make_loader(dataset, (3,), batch_size, shuffle, seed=5)
    reference = DataLoader(
        TensorDataset(torch.from_numpy(features), torch.from_numpy(dataset.labels)),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(5),
        drop_last=shuffle and rows % batch_size == 1,
    )
    assert len(ours) == len(reference)
    for _ in range(3):  # epochs: each reshuffles
        for (x, y), (rx, ry) in zip(ours, reference, strict=True):
            assert torch.equal(x, rx) and torch.equal(y, ry)


def test_large_fractions_still_leave_every_class_a_training_row(tmp_path):
    path = tmp_path / "ten.npz"
    np.savez(path, X=np.arange(40.0).reshape(20, 2), y=np.repeat([0, 1], 10))
    split = split_dataset(load_dataset(str(path)), val_fraction=0.35, test_fraction=0.6)
    assert np.bincount(split.train.labels, minlength=2).min() >= 1
    assert len(split.train) + len(split.val) + len(split.test) == 20


SEMICOLON_HINT = "looks semicolon-separated; foldserve reads comma-separated CSV"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a;b;label\n1;2;x\n3;4;y\n", "no label column 'label'"),  # the whole header is one column
        ("a;b;label\n1;2;x\n3;4;y\n", SEMICOLON_HINT),
        ("a,b,label\n1;2;x\n", f"line 2: 1 values, expected 3; it {SEMICOLON_HINT}"),
        ("a,label\n1;5,x\n", f"'1;5' is not a number; it {SEMICOLON_HINT}"),
    ],
)
def test_a_semicolon_separated_csv_gets_a_hint(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(message)):
        load_dataset(str(path))


def test_no_semicolon_hint_for_a_comma_separated_csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,label\nfoo,x\n")
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    assert "semicolon" not in str(info.value).split("data.csv", 1)[1]  # (the tmp path has it)
