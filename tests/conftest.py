"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained_mlp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits MLP trained for a few epochs: its directory holds model.onnx, card.json, …"""
    from foldserve.training.pipeline import TrainConfig, run_training
    from foldserve.training.train import FitSettings

    out = tmp_path_factory.mktemp("trained-mlp")
    run_training(
        TrainConfig(out=out, model_version="test-1", fit=FitSettings(epochs=8, progress=False))
    )
    return out
