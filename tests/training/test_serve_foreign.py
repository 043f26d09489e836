"""Acceptance: a plain torch module foldserve did not build, exported by torch, folded by
`foldserve fold`, served by `foldserve serve` and called with tritonclient, answers as torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from torch import nn

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.foldserve.v1 import predictor_pb2_grpc as pb_grpc
from foldserve.cli import main
from tests.service.subprocess_server import REPO, env, server_process

LABELS = ["low", "mid", "high"]


def plain_module() -> nn.Module:
    """BatchNorm over the input, Linear, ReLU, BatchNorm, Linear: with running statistics."""
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.BatchNorm1d(6), nn.Linear(6, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 3)
    )
    for layer in (module[0], module[3]):
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2)
        layer.weight.data.uniform_(0.5, 1.5)
        layer.bias.data.uniform_(-0.5, 0.5)
    return module.eval()


def export(module: nn.Module, path: Path) -> None:
    torch.onnx.export(
        module, (torch.zeros(2, 6),), str(path), dynamo=False,
        input_names=["x"], output_names=["scores"],
        dynamic_axes={"x": {0: "batch"}, "scores": {0: "batch"}},
    )  # fmt: skip


TRITON = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.grpc as triton
    client = triton.InferenceServerClient(sys.argv[1])
    batch = np.array(json.loads(sys.argv[2]), dtype=np.float32)
    inp = triton.InferInput("x", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch)
    result = client.infer(sys.argv[3], [inp])
    print(json.dumps({
        "scores": result.as_numpy("scores").tolist(),
        "metadata": client.get_model_metadata(sys.argv[3], as_json=True),
    }))
""")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch: the TorchScript exporter
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "as-exported"])
def test_a_plain_torch_module_served_to_tritonclient(tmp_path: Path, fold: bool) -> None:
    module = plain_module()
    folder = tmp_path / "plain"
    folder.mkdir()
    exported = tmp_path / "exported.onnx"
    export(module, exported)
    served = folder / "model.onnx"
    if fold:
        assert main(["fold", str(exported), str(served)]) == 0
    else:
        served.write_bytes(exported.read_bytes())
    (folder / "config.json").write_text(json.dumps({"name": "plain", "class_labels": LABELS}))
    batch = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(batch)).numpy()
    with server_process(served, tmp_path) as server:
        result = subprocess.run(
            [sys.executable, "-c", TRITON, f"127.0.0.1:{server.port}",
             json.dumps(batch.tolist()), "plain"],
            capture_output=True, text=True, cwd=REPO, env=env(), timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        reply = json.loads(result.stdout)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.PredictorStub(channel)
            answer = stub.Predict(pb.PredictRequest(features=batch[0].tolist()), timeout=10)
            description = stub.DescribeModel(pb.DescribeModelRequest(), timeout=10)
    np.testing.assert_allclose(np.array(reply["scores"]), expected, atol=1e-5, rtol=1e-5)
    assert reply["metadata"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "6"]}]
    assert reply["metadata"]["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": ["-1", "3"]}
    ]
    label = int(expected[0].argmax())
    assert (answer.model_name, answer.label, answer.class_name) == ("plain", label, LABELS[label])
    softmax = np.exp(expected[0] - expected[0].max())
    np.testing.assert_allclose(answer.probabilities, softmax / softmax.sum(), atol=1e-5)
    folded = description.fold_report.fields["folded"].list_value.values
    assert len(folded) == (2 if fold else 0)
