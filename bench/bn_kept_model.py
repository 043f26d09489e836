"""Export a foldserve training checkpoint to ONNX WITHOUT folding its BatchNorms: the BN-kept
twin of the served model, for `foldserve bench --bn-kept-model` (onnxruntime alone, folded vs
kept).

    .venv/bin/python bench/bn_kept_model.py --checkpoint models/default/checkpoint.pt \\
        --out models/default/model_bn_kept.onnx

How BN is kept: the network is rebuilt from the checkpoint (`training.models`), put in eval mode
(BN then normalizes with its running statistics, exactly what the fold computes in closed form)
and exported with the same TorchScript exporter, opset, input and output names as
`training/export.py`, but without `fold_batchnorm` and with `training=TrainingMode.PRESERVE`:
in the default EVAL mode the exporter's own eval peephole pass fuses a Conv's BN into it, which
would leave nothing to compare in the CNN. The file gets no foldserve metadata (it is not meant
to be served). It is checked against the unfolded torch network on the checkpoint's examples,
and must contain BatchNormalization nodes. Prints the path and the node count.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from foldserve.contract import INPUT_NAME, LOGITS, OUTPUT_NAMES
from foldserve.runtime import ort
from foldserve.training.export import FOLD_ATOL, FOLD_RTOL, OPSET, count_batchnorm_nodes
from foldserve.training.models import ModelSpec, build_model


class _WithProbabilities(nn.Module):
    """The served model's outputs: logits and their softmax (as `training/export.py` exports)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(x)
        return logits, torch.softmax(logits, dim=1)


def load_network(checkpoint: Path) -> tuple[nn.Module, np.ndarray]:
    """The trained network of a checkpoint, in eval mode, and its saved check examples."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network = build_model(ModelSpec.from_dict(saved["spec"]))
    network.load_state_dict(saved["state_dict"])
    return network.eval(), saved["check_inputs"].numpy().astype(np.float32)


def export_bn_kept(checkpoint: Path, out: Path) -> int:
    """Write the BN-kept ONNX file; return its BatchNormalization node count.

    Raises:
        RuntimeError: the file has no BN node, or disagrees with the torch network.
    """
    network, examples = load_network(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            _WithProbabilities(network).eval(),
            (torch.from_numpy(examples[:2]),),
            str(out),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=OPSET,
            training=torch.onnx.TrainingMode.PRESERVE,
            dynamo=False,
        )
    nodes = count_batchnorm_nodes(onnx.load(str(out)))
    if not nodes:
        raise RuntimeError(f"{out}: the export folded every BatchNorm; nothing to compare")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (served,) = session.run([LOGITS], {INPUT_NAME: examples})
    with torch.no_grad():
        expected = network(torch.from_numpy(examples)).numpy()
    if not np.allclose(served, expected, atol=FOLD_ATOL, rtol=FOLD_RTOL):
        error = float(np.max(np.abs(served - expected)))
        raise RuntimeError(f"{out}: onnxruntime and torch differ by up to {error:.3g}")
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint.pt")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    args = parser.parse_args(argv)
    nodes = export_bn_kept(args.checkpoint, args.out)
    print(f"wrote {args.out}: {nodes} BatchNormalization nodes kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
