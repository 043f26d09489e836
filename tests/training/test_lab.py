"""`foldserve lab`: its measurements on small cases, and a real `--quick` run end to end."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from foldserve.training.lab.claims import beyond_noise, fmt
from foldserve.training.lab.experiments import smoothness
from foldserve.training.lab.experiments.common import inputs_of, log_log_fit, modules_of
from foldserve.training.lab.experiments.nets import ShiftNoise, figure1_mlp
from foldserve.training.lab.experiments.testtime import own_batch_accuracy
from foldserve.training.lab.plots import FIGURES

FOLDSERVE = [sys.executable, "-m", "foldserve.cli"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_noise_moves_every_training_pass_and_is_off_in_eval():
    noise = ShiftNoise(4, torch.Generator().manual_seed(0))
    x = torch.ones(3, 4)
    first, second = noise(x), noise(x)
    assert not torch.equal(first, second)
    assert torch.equal(first[0], first[1])  # one shift and scale per unit, not per example
    assert torch.equal(noise.eval()(x), x)


def test_measuring_a_noisy_net_does_not_change_the_noise_it_trains_with():
    torch.manual_seed(0)
    model = figure1_mlp("noisy-bn", seed=0)
    (noise, *_) = modules_of(model, ShiftNoise)
    before = noise.generator.get_state()
    inputs_of(model, modules_of(model, nn.Sigmoid), torch.rand(8, 64), train_view=True)
    assert torch.equal(noise.generator.get_state(), before)


def test_noisy_net_starts_from_the_same_weights_as_the_bn_net():
    torch.manual_seed(0)
    bn = figure1_mlp("bn", seed=0)
    torch.manual_seed(0)
    noisy = figure1_mlp("noisy-bn", seed=0)
    linears = zip(modules_of(bn, nn.Linear), modules_of(noisy, nn.Linear), strict=True)
    assert all(torch.equal(a.weight, b.weight) for a, b in linears)
    assert len(modules_of(noisy, ShiftNoise)) == 3
    assert not modules_of(figure1_mlp("plain-glorot", seed=0), nn.BatchNorm1d)


def test_probes_leave_the_model_as_they_found_it():
    torch.manual_seed(0)
    model = figure1_mlp("bn", seed=0).train()
    x, y = torch.rand(16, 64), torch.arange(16) % 10
    before = _state(model)
    landscape = smoothness.landscape(model, x, y)
    coupling = smoothness.coupling(model, x, y, step=0.1)
    inputs_of(model, modules_of(model, nn.Sigmoid), x, train_view=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training
    assert landscape["loss_range"] >= 0 and landscape["beta"] > 0
    assert len(coupling) == 3 and all(-1 <= c["cosine"] <= 1 for c in coupling)


def test_one_example_normalized_alone_gives_one_answer_for_every_input():
    torch.manual_seed(0)
    from foldserve.training.lab.experiments.nets import production_mlp

    model = production_mlp(hidden_bn=True, dropout=0.0, input_bn=True).eval()
    with torch.no_grad():
        model[0].running_var.fill_(30.0)  # any statistics: they are not used
    accuracy = own_batch_accuracy(model, batch_size=1, seed=0)
    from foldserve.training.lab.experiments.common import digits_split

    counts = np.bincount(digits_split().test.labels) / len(digits_split().test)
    assert any(np.isclose(accuracy, share) for share in counts)


def test_power_law_fit_and_noise_screen():
    sizes = [2, 4, 8, 16, 32]
    fit = log_log_fit(sizes, [3.0 / np.sqrt(b) for b in sizes])
    assert fit["exponent"] == pytest.approx(-0.5) and fit["prefactor"] == pytest.approx(3.0)
    a, b = {"mean": 1.0, "std": 0.1, "n": 3}, {"mean": 1.5, "std": 0.2, "n": 3}
    assert beyond_noise(a, b) and not beyond_noise(a, {**b, "std": 0.5})
    assert fmt(a) == "1.000 ± 0.100" and fmt({**a, "n": 1}) == "1.000"


@pytest.mark.slow
def test_quick_run_writes_the_report_and_plots(tmp_path):
    out = tmp_path / "lab"
    result = subprocess.run(
        [*FOLDSERVE, "lab", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "lab (quick):" in result.stdout
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) < 150_000, name
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())

    # Every figure the report shows exists beside it.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert sorted(set(links)) == sorted(FIGURES)
    # The claim table: fourteen claims, each with a verdict.
    rows = re.findall(r"^\| (\d+) \| .* \| \*\*([a-z ]+)\*\* \|$", report, re.MULTILINE)
    assert [int(n) for n, _ in rows] == list(range(1, 15))
    assert {v for _, v in rows} <= {"agrees", "disagrees", "partly", "no measurable effect",
                                    "holds", "fails", "does not hold"}  # fmt: skip
    for heading in ("## Claim by claim", "## 1. Learning speed", "## 6. Covariate shift",
                    "## Where our results side", "## Verdict rules"):  # fmt: skip
        assert heading in report

    # Folding changes no prediction: the folded accuracy is the running statistics' one.
    summary = results["testtime"]["summary"]
    assert summary["all_same_predictions"] is True
    assert summary["precise_folded_accuracy"] == summary["precise_running_accuracy"]
    assert summary["max_logit_difference"] < 1e-4
    assert "same prediction on every example: True" in report
    assert re.search(r"\| 11 \| .* \| \*\*holds\*\* \|", report)
    # One example normalized with its own statistics is at chance.
    assert summary["own_batch"]["1"]["mean"] < 0.2

    # The 1/√B law: the fit is reported, and sampling noise follows it even at this size.
    for layer in results["batchsize"]["spread"]["layers"]:
        assert layer["mean_fit_corrected"]["exponent"] == pytest.approx(-0.5, abs=0.05)
    assert re.search(r"mean spread ∝ B\^-0\.\d{3} \(corrected: [01]\.\d{3}·B\^-0\.\d{3}\)", report)

    # The black-cat table carries the shift monitor's score for every slice.
    scores = [row["shift_score"]["mean"] for row in results["blackcat"]["summary"].values()]
    assert scores[0] < min(scores[1:])
    assert "input shift score" in report
