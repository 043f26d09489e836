"""`foldserve adapt` (`foldserve.core.adapt`): BN statistics re-estimated on unlabeled inputs.

The models (`adapt_models`) have BN statistics that are the exact population moments of their
training distribution, folded by `foldserve fold`'s code: adapting on a fresh clean sample must
give them back within sampling error, and adapting on an affinely shifted input must undo the
shift where the input BN sits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from foldserve import contract
from foldserve.cli import main
from foldserve.core.adapt import MIN_EXAMPLES, AdaptError, adapt_model
from foldserve.core.adapt.estimate import run_graph
from foldserve.core.loading import load_model
from tests.training import adapt_models

SAMPLE = 4000


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def folded(request, tmp_path_factory) -> tuple[Path, adapt_models.Population]:
    build = getattr(adapt_models, request.param)
    return build(tmp_path_factory.mktemp(request.param) / "model.onnx")


def _logits(data: bytes | Path, inputs: np.ndarray) -> np.ndarray:
    source = data.read_bytes() if isinstance(data, Path) else data
    (logits,) = run_graph(source, "input", inputs, ["logits"])
    return logits


def _first_layer(data: bytes, inputs: np.ndarray) -> np.ndarray:
    """The first folded layer's output (its pre-activations, before the ReLU)."""
    model = onnx.load_model_from_string(data)
    (layer,) = [n for n in model.graph.node if n.op_type in ("Gemm", "Conv")][:1]
    model.graph.output.append(onnx.ValueInfoProto(name=layer.output[0]))
    (values,) = run_graph(model.SerializeToString(), "input", inputs, [layer.output[0]])
    return values.astype(np.float64)


def test_clean_sample_gives_the_training_statistics_back(folded) -> None:
    path, population = folded
    model = load_model(path, monitor=False)
    sample = population.draw(SAMPLE, seed=7)
    adapted = adapt_model(model, sample, "clean", reference=False)
    assert len(adapted.record.layers) == len(model.bn_stats) == 3
    for old, new in zip(model.bn_stats, adapted.bn_stats, strict=True):
        var = np.asarray(old.var)
        # Sampling error of a mean over SAMPLE examples (conservative: spatial positions are
        # not counted as independent), and of a variance (ReLU'd values: heavier tails).
        mean_error = np.abs(np.subtract(new.mean, old.mean)) / np.sqrt(var / SAMPLE)
        assert mean_error.max() < 5, old.layer
        assert np.abs(np.asarray(new.var) / var - 1).max() < 0.25, old.layer
    test = population.draw(2000, seed=8)
    same = _logits(path, test).argmax(1) == _logits(adapted.data, test).argmax(1)
    # Random heads leave many examples near a class boundary; a trained network's margins
    # keep 99% (`test_a_trained_model_adapted_on_clean_digits_predicts_the_same`).
    assert same.mean() >= 0.97


def test_an_affine_input_shift_is_undone_at_the_first_layer(folded) -> None:
    path, population = folded
    model = load_model(path, monitor=False)
    clean = population.draw(1000, seed=9)
    rng = np.random.default_rng(10)
    scale = rng.uniform(0.5, 2.0, (1, clean.shape[1], *([1] * (clean.ndim - 2))))
    offset = rng.normal(0, 3, scale.shape)
    if clean.ndim > 2:  # a conv's input BN is per channel: shift each channel as one
        shifted = clean * scale + offset
    else:  # per feature
        scale, offset = rng.uniform(0.5, 2.0, clean.shape[1]), rng.normal(0, 3, clean.shape[1])
        shifted = clean * scale + offset
    shifted = shifted.astype(np.float32)
    on_clean = adapt_model(model, clean, "clean", reference=False)
    on_shifted = adapt_model(model, shifted, "shifted", reference=False)
    want = _first_layer(on_clean.data, clean)
    got = _first_layer(on_shifted.data, shifted)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    # Unadapted, the shift moves those pre-activations by far more.
    moved = _first_layer(path.read_bytes(), shifted) - want
    assert np.abs(moved).max() > 0.1 * np.abs(want).max()


def test_the_cli_writes_a_checked_file_that_records_its_adaptation(folded, tmp_path) -> None:
    path, population = folded
    sample = tmp_path / "stream.npz"
    np.savez(sample, X=population.draw(300, seed=11) * 1.5)
    out = tmp_path / "adapted"
    assert main(["adapt", "--model", str(path), "--data", str(sample), "--out", str(out)]) == 0
    written = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(written)
    assert not [n for n in written.graph.node if n.op_type == "BatchNormalization"]
    properties = {p.key: p.value for p in written.metadata_props}
    record = contract.read_adaptation(properties)
    source = load_model(path, monitor=False)
    assert record.examples == 300 and record.data == "stream.npz"
    assert record.source_sha256 == source.sha256
    adapted = load_model(out / "model.onnx")  # as the server loads it, monitor included
    assert adapted.bn_stats != source.bn_stats
    assert contract.read_shift_reference(properties) is not None
    assert adapted.shift is not None, adapted.shift_off


def _unfolded(path: Path) -> Path:
    """A softmax regression with no BN and no foldserve metadata."""
    from tests.service.model_files import linear_model

    rng = np.random.default_rng(0)
    onnx.save(linear_model(rng.normal(size=(64, 10)), np.zeros(10), None), path)
    return path


def test_a_file_with_no_recorded_fold_is_refused(tmp_path) -> None:
    model = load_model(_unfolded(tmp_path / "model.onnx"), monitor=False)
    inputs = np.zeros((100, *model.classifier.example_shape), np.float32)
    with pytest.raises(AdaptError, match="records no folded BatchNorm"):
        adapt_model(model, inputs, "x")


def _cli(path: Path, data: Path, out: Path, capsys) -> tuple[int, str]:
    code = main(["adapt", "--model", str(path), "--data", str(data), "--out", str(out)])
    return code, capsys.readouterr().err


def test_a_sample_of_the_wrong_shape_exits_2(folded, tmp_path, capsys) -> None:
    path, population = folded
    wrong = population.draw(100, seed=0).reshape(100, -1)[:, :-1]
    np.savez(tmp_path / "wrong.npz", X=np.ascontiguousarray(wrong)[:-1])
    code, err = _cli(path, tmp_path / "wrong.npz", tmp_path / "out", capsys)
    assert code == 2 and "do not make examples of shape" in err
    assert not (tmp_path / "out").exists()


def test_too_few_examples_exits_2(folded, tmp_path, capsys) -> None:
    path, population = folded
    np.savez(tmp_path / "few.npz", X=population.draw(MIN_EXAMPLES - 1, seed=0))
    code, err = _cli(path, tmp_path / "few.npz", tmp_path / "out", capsys)
    assert code == 2 and f"{MIN_EXAMPLES - 1} examples" in err and str(MIN_EXAMPLES) in err


def test_no_recorded_fold_exits_2(tmp_path, capsys) -> None:
    path = _unfolded(tmp_path / "model.onnx")
    np.savez(tmp_path / "x.npz", X=np.zeros((100, 64), np.float32))
    code, err = _cli(path, tmp_path / "x.npz", tmp_path / "out", capsys)
    assert code == 2 and "records no folded BatchNorm" in err


def test_a_trained_model_adapted_on_clean_digits_predicts_the_same(trained_mlp_dir) -> None:
    """foldserve's own export (its BNs found through the taps), adapted on 500 clean examples."""
    from foldserve.datasets import load_dataset

    model = load_model(trained_mlp_dir / "model.onnx", monitor=False)
    digits = load_dataset("digits").features.astype(np.float32)
    digits = digits[np.random.default_rng(0).permutation(len(digits))]
    adapted = adapt_model(model, digits[:500], "digits", reference=False)
    assert len(adapted.record.layers) == len(model.bn_stats)
    for old, new in zip(model.bn_stats, adapted.bn_stats, strict=True):
        spread = np.sqrt(np.add(old.var, new.var) / 500) + 1e-3  # dead pixels: both 0
        assert (np.abs(np.subtract(new.mean, old.mean)) / spread).max() < 6, old.layer
    rest = digits[500:]
    path = trained_mlp_dir / "model.onnx"
    same = _logits(path, rest).argmax(1) == _logits(adapted.data, rest).argmax(1)
    assert same.mean() >= 0.99


def test_a_keras_style_graph_folded_by_foldserve_fold_adapts(tmp_path) -> None:
    """tf2onnx's Dense layers, MatMul → Add(bias) → BN, and an input BN before the first MatMul:
    the fold's record finds each layer by its node name, a bias in the Add."""
    from foldserve.training.onnx_fold.fold import fold_file
    from tests.training.onnx_graphs import tf2onnx_dense

    onnx.save(tf2onnx_dense(), tmp_path / "dense.onnx")
    fold_file(tmp_path / "dense.onnx", tmp_path / "model.onnx")
    model = load_model(tmp_path / "model.onnx", monitor=False)
    inputs = np.random.default_rng(0).normal(1.0, 2.0, (400, 20)).astype(np.float32)
    adapted = adapt_model(model, inputs, "random", reference=False)
    assert len(adapted.record.layers) == len(model.bn_stats) == 3
    first = adapted.bn_stats[0]  # the input BN: the sample's own moments
    np.testing.assert_allclose(first.mean, inputs.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first.var, inputs.var(0, ddof=1), rtol=1e-4)
