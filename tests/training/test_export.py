import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from foldserve import contract
from foldserve.contract import KEYS
from foldserve.runtime import ort
from foldserve.training.export import ExportError, ModelInfo, export_model


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 3)
            module.running_var.copy_(torch.rand(n, generator=generator) * 10 + 0.05)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return model.eval()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bn(
        nn.Sequential(
            nn.BatchNorm1d(6), nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)
        )
    )


def _info(**overrides) -> ModelInfo:
    values = {
        "arch": "mlp",
        "dataset": "unit",
        "input_shape": (6,),
        "class_labels": ["a", "b", "c"],
        "training_metrics": {"test_accuracy": 0.5},
        "model_version": "v1",
    }
    return ModelInfo(**{**values, **overrides})


def test_exported_file_has_no_batchnorm_and_documented_metadata(tmp_path):
    model = _mlp()
    inputs = np.random.default_rng(0).normal(size=(100, 6)).astype(np.float32) * 4
    result = export_model(model, tmp_path, _info(), inputs)

    proto = onnx.load(str(result.model_path))
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node].count("BatchNormalization") == 0
    assert result.bn_nodes == 0
    metadata = {p.key: p.value for p in proto.metadata_props}
    # No reference data, and an export is not an adaptation.
    assert set(metadata) == set(KEYS.values()) - {KEYS["shift_reference"], KEYS["adaptation"]}
    assert metadata[KEYS["model_version"]] == "v1"
    assert json.loads(metadata[KEYS["input_shape"]]) == [6]
    assert json.loads(metadata[KEYS["class_labels"]]) == ["a", "b", "c"]
    parsed = contract.from_properties(metadata)
    assert parsed.input_shape == (6,) and parsed.class_labels == ("a", "b", "c")
    assert parsed.fold_report == result.fold_report
    stats = json.loads(metadata[KEYS["bn_stats"]])
    assert [s["layer"] for s in stats] == ["0", "2"]
    assert stats[0]["direction"] == "forward"
    assert [s["reads_model_input"] for s in stats] == [True, False]
    torch.testing.assert_close(
        torch.tensor(stats[1]["mean"]), model[2].running_mean, atol=1e-6, rtol=0
    )
    assert set(stats[1]) >= {"mean", "var", "gamma", "beta", "eps", "folded_into"}
    assert json.loads(metadata[KEYS["fold_report"]])["left"] == []
    assert result.max_abs_error < 1e-4
    card = json.loads(result.card_path.read_text())
    assert card["batchnorm_nodes"] == 0 and card["test_accuracy"] == 0.5


def test_onnxruntime_matches_unfolded_torch_for_any_batch_size(tmp_path):
    model = _mlp()
    inputs = np.random.default_rng(1).normal(size=(70, 6)).astype(np.float32) * 4
    result = export_model(model, tmp_path, _info(), inputs)
    session = ort.InferenceSession(str(result.model_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    for batch in (1, 7, 70):
        logits, probabilities = session.run(list(contract.OUTPUT_NAMES), {"input": inputs[:batch]})
        np.testing.assert_allclose(logits, expected[:batch], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    alone = session.run(["logits"], {"input": inputs[5:6]})[0][0]
    batched = session.run(["logits"], {"input": inputs[:65]})[0][5]
    np.testing.assert_allclose(alone, batched, atol=1e-6, rtol=0)


def test_cnn_exports_without_batchnorm(tmp_path):
    from foldserve.training.models import ModelSpec, build_model

    model = _randomize_bn(build_model(ModelSpec("cnn", (1, 8, 8), 10)))
    inputs = np.random.default_rng(2).uniform(0, 16, size=(80, 1, 8, 8)).astype(np.float32)
    result = export_model(model, tmp_path, _info(arch="cnn", input_shape=(1, 8, 8)), inputs)
    graph = onnx.load(str(result.model_path)).graph
    assert [n.op_type for n in graph.node].count("BatchNormalization") == 0
    assert {"Conv", "Gemm"} <= {n.op_type for n in graph.node}
    assert result.bn_nodes == 0
    assert result.max_abs_error < 1e-4
    assert len(result.fold_report.folded) == 4


def test_batchnorm_that_cannot_fold_fails_export_with_its_name(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(
        nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(2),
            nn.Conv2d(2, 2, 3, padding=1),
            nn.Flatten(),
            nn.Linear(2 * 16, 2),
        )
    )
    inputs = np.random.default_rng(3).normal(size=(10, 1, 4, 4)).astype(np.float32)
    with pytest.raises(ExportError, match=r"1 BatchNormalization node.*'2'"):
        export_model(model, tmp_path, _info(arch="cnn", input_shape=(1, 4, 4)), inputs)


def test_original_model_is_left_untouched(tmp_path):
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_model(model, tmp_path, _info(), np.ones((4, 6), dtype=np.float32))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
