"""The training subcommands as a user runs them: real processes, real files."""

import json
import re
import subprocess
import sys

import onnx
import pytest

from foldserve.contract.data import SPLIT_SEED, VAL_FRACTION
from foldserve.contract.layout import MODEL_DIR
from foldserve.training.defaults import (
    ARCH,
    BATCH_SIZE,
    DEVICE,
    DROPOUT,
    LEARNING_RATE,
    OPTIMIZER,
    WEIGHT_DECAY,
)

FOLDSERVE = [sys.executable, "-m", "foldserve.cli"]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FOLDSERVE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _test_accuracy(stdout: str) -> float:
    match = re.search(r"^test accuracy: ([0-9.]+)$", stdout, re.MULTILINE)
    assert match, stdout
    return float(match.group(1))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_train_then_export_smoke(tmp_path, arch):
    out = tmp_path / "run"
    result = _run(
        "train",
        "--data",
        "digits",
        "--arch",
        arch,
        "--epochs",
        "1",
        "--dry-run",
        "--no-progress",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    for name in ("model.onnx", "card.json", "checkpoint.pt", "history.json"):
        assert (out / name).is_file(), name
    assert "0 BatchNormalization nodes" in result.stdout
    assert 0.0 <= _test_accuracy(result.stdout) <= 1.0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and {"train_loss", "val_accuracy"} <= set(history[0])

    exported = tmp_path / "exported"
    result = _run(
        "export",
        "--checkpoint",
        str(out / "checkpoint.pt"),
        "--out",
        str(exported),
        "--model-version",
        "v7",
    )
    assert result.returncode == 0, result.stderr
    metadata = {p.key: p.value for p in onnx.load(str(exported / "model.onnx")).metadata_props}
    assert metadata["foldserve.model_version"] == "v7"
    assert metadata["foldserve.arch"] == arch


def test_training_is_deterministic_for_a_seed(tmp_path):
    runs = []
    for name in ("a", "b"):
        result = _run(
            "train", "--epochs", "2", "--no-progress", "--seed", "3", "--out", str(tmp_path / name)
        )
        assert result.returncode == 0, result.stderr
        runs.append(json.loads((tmp_path / name / "history.json").read_text()))
    assert runs[0] == runs[1]


def test_bad_data_exits_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = _run("train", "--data", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "no label column 'label'" in result.stderr and "bad.csv" in result.stderr
    result = _run("train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_cnn_refuses_flat_features(tmp_path):
    data = tmp_path / "flat.csv"
    data.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30)))
    result = _run("train", "--data", str(data), "--arch", "cnn", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "needs image-shaped data" in result.stderr


def test_users_csv_trains_end_to_end(tmp_path):
    data = tmp_path / "blobs.csv"
    lines = ["x,y,kind"]
    for i in range(90):
        kind = ["left", "middle", "right"][i % 3]
        lines.append(f"{(i % 3) * 10 + (i % 7) * 0.1},{(i % 5) * 0.2},{kind}")
    data.write_text("\n".join(lines) + "\n")
    result = _run(
        "train",
        "--data",
        str(data),
        "--label-column",
        "kind",
        "--epochs",
        "30",
        "--batch-size",
        "16",
        "--no-progress",
        "--out",
        str(tmp_path / "o"),
    )
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "o" / "card.json").read_text())
    assert card["class_labels"] == ["left", "middle", "right"]
    assert card["test_accuracy"] >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "bar"), [("mlp", 0.97), ("cnn", 0.98)])
def test_default_training_reaches_the_accuracy_bar(tmp_path, arch, bar):
    result = _run(
        "train",
        "--data",
        "digits",
        "--arch",
        arch,
        "--no-progress",
        "--out",
        str(tmp_path / arch),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    accuracy = _test_accuracy(result.stdout)
    assert accuracy >= bar, result.stdout
    graph = onnx.load(str(tmp_path / arch / "model.onnx")).graph
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]


def test_ctrl_c_during_training_prints_one_line(tmp_path):
    """SIGINT once the fit has started: the last line is "interrupted", exit 130, no traceback."""
    import os
    import signal

    process = subprocess.Popen(
        [*FOLDSERVE, "train", "--epochs", "1000", "--out", str(tmp_path / "o")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen = b""
        while b"epoch" not in seen:  # the progress bar: the fit is running
            chunk = os.read(process.stderr.fileno(), 4096)
            assert chunk, f"train ended before its first epoch: {seen.decode()}"
            seen += chunk
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(60)
    stderr = (seen + rest).decode()
    assert process.returncode == 130, stderr
    assert stderr.endswith("foldserve train: interrupted\n")
    assert "Traceback" not in stderr


def test_train_refuses_to_overwrite_a_model_without_the_flag(tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"a model someone serves")
    result = _run("train", "--epochs", "1", "--dry-run", "--no-progress", "--out", str(out))
    assert result.returncode == 2
    assert f"{out / 'model.onnx'} already exists" in result.stderr
    assert "--overwrite" in result.stderr
    assert (out / "model.onnx").read_bytes() == b"a model someone serves"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]  # nothing trained
    result = _run(
        "train", "--epochs", "1", "--dry-run", "--no-progress", "--out", str(out), "--overwrite"
    )
    assert result.returncode == 0, result.stderr
    assert onnx.load(str(out / "model.onnx")).graph.node


def _help(command, capsys):
    from foldserve.cli import main

    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)  # argparse wraps to the terminal


def test_train_and_export_help_show_every_default(capsys):

    text = _help("train", capsys)
    for expected in [
        f"--out DIR output folder (default: {MODEL_DIR})",
        "--overwrite replace an existing model.onnx in --out",
        f"--lr RATE peak learning rate (one-cycle schedule) (default: {LEARNING_RATE})",
        f"--batch-size N examples per training step (default: {BATCH_SIZE})",
        "(default: 40 (mlp), 30 (cnn))",
        "(default: 512,256)",
        "(default: 32,64)",
        f"(default: {DROPOUT})",
        f"--seed N seed of the data split and of training (default: {SPLIT_SEED})",
        f"(default: {VAL_FRACTION})",
        f"(default: {WEIGHT_DECAY})",
        f"(default: {DEVICE})",
        f"(default: {OPTIMIZER})",
        f"(default: {ARCH})",
    ]:
        assert expected in text, expected
    assert "(default: None)" not in text and "(default: False)" not in text
    text = _help("export", capsys)
    assert "(default: the checkpoint's folder)" in text
