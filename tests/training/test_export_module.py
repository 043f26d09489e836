"""`foldserve export --module` and `export_torch_module`: a plain torch module, not built by
foldserve, folded, verified, exported with the contract's metadata, and served."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from foldserve import contract
from foldserve.core.loading import load_model
from foldserve.training.export import ExportError
from foldserve.training.export_module import ModuleError, export_torch_module, load_module
from foldserve.training.onnx_fold.graph import count_batch_norms
from tests.service.subprocess_server import REPO, env, foldserve_command, server_process
from tests.training.torch_graphs import randomize_bn

# A user's own file, as they would write it: nothing of foldserve in it.
USER_MODULE = """
import torch
from torch import nn


class SmallNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.BatchNorm2d(3),
            nn.Conv2d(3, 8, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def padded_after_bn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 2),
    )
"""


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with the user's module and trained-looking weights; the current directory."""
    (tmp_path / "user_nets.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = load_module("user_nets:SmallNet")
    torch.save(randomize_bn(net, seed=4).state_dict(), tmp_path / "state.pt")
    yield tmp_path
    sys.modules.pop("user_nets", None)


def test_a_plain_module_exports_with_the_contracts_metadata_and_serves(user_dir: Path) -> None:
    module = load_module("user_nets:SmallNet", user_dir / "state.pt")
    result = export_torch_module(module, user_dir / "out", (3, 10, 10), model_version="v1")
    assert result.bn_nodes == 0 and result.max_abs_error < 1e-4
    assert [f.direction for f in result.fold_report.folded] == ["forward", "backward", "backward"]
    proto = onnx.load(str(result.model_path))
    metadata = contract.from_properties({p.key: p.value for p in proto.metadata_props})
    assert metadata.class_labels == ("0", "1", "2") and metadata.arch == "SmallNet"
    assert metadata.input_shape == (3, 10, 10) and metadata.input_bn.num_features == 3
    served = load_model(result.model_path)  # the server's own loader and checks
    x = np.random.default_rng(0).standard_normal((4, 3, 10, 10)).astype(np.float32)
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(served.run_classifier(x)["logits"], expected, atol=1e-5, rtol=1e-5)


def test_a_bn_that_cannot_fold_is_refused_with_its_reason_or_kept_when_allowed(
    user_dir: Path,
) -> None:
    module = randomize_bn(load_module("user_nets:padded_after_bn"))
    with pytest.raises(ExportError, match=r"1 BatchNorm layer\(s\) cannot fold exactly \('2': .*"
                       r"conv '3' has padding 1.*--allow-unfolded"):  # fmt: skip
        export_torch_module(module, user_dir / "refused", (3, 8, 8))
    assert not (user_dir / "refused" / "model.onnx").exists()
    result = export_torch_module(module, user_dir / "kept", (3, 8, 8), allow_unfolded=True)
    assert result.bn_nodes == 1 == count_batch_norms(onnx.load(str(result.model_path)).graph)
    assert [x.layer for x in result.fold_report.left] == ["2"]
    card = json.loads(result.card_path.read_text())
    assert card["batchnorm_nodes"] == 1 and card["left"][0]["layer"] == "2"
    served = load_model(result.model_path)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(served.run_classifier(x)["logits"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: load_module("user_nets"), "expected package.module:factory"),
        (lambda: load_module("no_such_module:f"), "No module named 'no_such_module'"),
        (lambda: load_module("user_nets:Nope"), "has no attribute 'Nope'"),
        (lambda: load_module("user_nets:torch"), "is neither an nn.Module nor callable"),
        (lambda: load_module("user_nets:SmallNet", "missing.pt"), "do not exist"),
        (lambda: export_torch_module(nn.Linear(4, 2), "o", (5,)), "cannot run on input shape"),
        (lambda: export_torch_module(nn.Flatten(0), "o", (4,)), "must return [batch, classes]"),
        (
            lambda: export_torch_module(nn.Linear(4, 2), "o", (4,), class_labels=["a"]),
            "1 class labels for 2 outputs",
        ),
    ],
)
def test_clear_errors(user_dir: Path, call, message: str) -> None:
    with pytest.raises(ModuleError, match=message.replace("[", r"\[")):
        call()


def test_weights_that_do_not_fit(user_dir: Path) -> None:
    torch.save({"state_dict": nn.Linear(2, 2).state_dict()}, user_dir / "other.pt")
    with pytest.raises(ModuleError, match="do not fit the module"):
        load_module("user_nets:SmallNet", user_dir / "other.pt")


def test_the_command_exports_a_module_that_answers_tritonclient(user_dir: Path) -> None:
    (user_dir / "labels.txt").write_text("cat\ndog\nbird\n")
    out = user_dir / "served"
    command = foldserve_command(
        "export", "--module", "user_nets:SmallNet", "--weights", "state.pt",
        "--input-shape", "3,10,10", "--class-labels-file", "labels.txt", "--out", str(out),
    )  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=user_dir, env=env(),
                            timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "folded 3 BatchNorm layer(s)" in result.stdout
    assert "0 BatchNormalization nodes" in result.stdout
    x = np.random.default_rng(2).standard_normal((2, 3, 10, 10)).astype(np.float32)
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import tritonclient.grpc as triton
        batch = np.array(json.loads(sys.argv[2]), dtype=np.float32)
        inp = triton.InferInput("input", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        reply = triton.InferenceServerClient(sys.argv[1]).infer("foldserve", [inp])
        print(json.dumps(reply.as_numpy("logits").tolist()))
    """)
    with server_process(out / "model.onnx", user_dir) as server:
        reply = subprocess.run(
            [sys.executable, "-c", script, server.target, json.dumps(x.tolist())],
            capture_output=True, text=True, cwd=REPO, env=env(), timeout=60, check=False,
        )  # fmt: skip
    assert reply.returncode == 0, reply.stderr
    module = load_module("user_nets:SmallNet", user_dir / "state.pt").eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.array(json.loads(reply.stdout)), expected, atol=1e-5, rtol=1e-5)
    labels = json.loads((out / "card.json").read_text())["class_labels"]
    assert labels == ["cat", "dog", "bird"]


def test_the_command_needs_a_checkpoint_or_a_module(tmp_path: Path) -> None:
    from foldserve.cli import main

    assert main(["export", "--out", str(tmp_path)]) == 2
    assert main(["export", "--module", "x:y", "--input-shape", "3"]) == 2  # no --out
