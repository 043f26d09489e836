"""Export your own torch module the way foldserve exports a model it trained.

    foldserve export --module mypackage.nets:build --weights state.pt --input-shape 3,32,32 \\
        --class-labels cat,dog --out models/mine

or, in Python, `export_torch_module(module, out_dir, input_shape)`. Either folds every BatchNorm
(`training.fold.fold_batchnorm`), exports ONNX, verifies the file against the unfolded module in
onnxruntime (within 1e-5, and one example alone against the same example inside a batch) and
writes the model-file metadata and card.json: the same path and checks as `foldserve train`
(`foldserve.training.export.export_model`). The module must take one float32 tensor ``[batch,
*input_shape]`` and return ``[batch, classes]`` logits; the file serves with `foldserve serve`.

A BN that cannot fold exactly (its reasons are in the fold report) stops the export by default,
with the reasons listed; ``allow_unfolded`` exports the module anyway, with those BNs kept as
BatchNormalization nodes in inference mode (the model still serves; each one costs a little
time, and the card lists them).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from foldserve.training.defaults import MODULE_CHECK_EXAMPLES, MODULE_DATASET, ONNX_FOLD_SEED
from foldserve.training.export import ExportError, ExportResult, ModelInfo, export_model
from foldserve.training.fold import fold_batchnorm


class ModuleError(ValueError):
    """The module, its weights, shapes or labels cannot be used; the message says which."""


def export_torch_module(
    module: nn.Module,
    out_dir: str | os.PathLike[str],
    input_shape: Sequence[int],
    *,
    class_labels: Sequence[str] | None = None,
    check_inputs: np.ndarray | None = None,
    allow_unfolded: bool = False,
    model_version: str | None = None,
    arch: str | None = None,
    dataset: str = MODULE_DATASET,
) -> ExportResult:
    """Fold, export and verify ``module`` into ``out_dir/model.onnx`` (and card.json).

    Args:
        module: takes ``[batch, *input_shape]`` float32, returns ``[batch, classes]`` logits;
            switched to eval mode on the CPU, its weights untouched.
        out_dir: created if missing.
        input_shape: one example's shape, without the batch axis.
        class_labels: one per output column; default ``"0"`` … ``"N-1"``.
        check_inputs: examples ``[N, *input_shape]`` to verify on (real data verifies best);
            default `MODULE_CHECK_EXAMPLES` standard-normal ones, seeded.
        allow_unfolded: export even when some BN cannot fold (kept as BatchNormalization).
        model_version: recorded in the file (default: the UTC time).
        arch: recorded as the model's architecture (default: the module's class name).
        dataset: recorded as the data set's name.

    Raises:
        ModuleError: the shapes or labels do not fit the module.
        training.fold.FoldError: torch.fx cannot trace it, or a BN has no running statistics.
        training.export.ExportError: a BN cannot fold (unless allowed), or the exported file
            does not equal the module; nothing is left behind.
    """
    shape = tuple(int(d) for d in input_shape)
    module = module.cpu().eval()
    inputs = _check_inputs(check_inputs, shape)
    classes = _output_width(module, inputs[:2])
    labels = tuple(class_labels) if class_labels is not None else tuple(map(str, range(classes)))
    if len(labels) != classes:
        raise ModuleError(f"{len(labels)} class labels for {classes} outputs: {list(labels)}")
    if not allow_unfolded:
        _refuse_unfoldable(module, inputs[:2])
    info = ModelInfo(
        arch=arch or type(module).__name__,
        dataset=dataset,
        input_shape=shape,
        class_labels=list(labels),
        model_version=model_version,
    )
    return export_model(module, Path(out_dir), info, inputs, allow_batchnorm=allow_unfolded)


def _refuse_unfoldable(module: nn.Module, examples: np.ndarray) -> None:
    """Raise, listing every reason, when some BN of ``module`` cannot fold."""
    left = fold_batchnorm(module, example_inputs=(torch.from_numpy(examples),)).left
    if left:
        reasons = "; ".join(f"{entry.layer!r}: {entry.reason}" for entry in left)
        raise ExportError(
            f"{len(left)} BatchNorm layer(s) cannot fold exactly ({reasons}); "
            "--allow-unfolded (allow_unfolded=True) exports them as BatchNormalization nodes"
        )


def load_module(spec: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """Build the module ``spec`` names and load ``weights`` into it.

    Args:
        spec: ``package.module:factory``, where ``factory`` is a callable that takes no
            arguments and returns an `nn.Module` (a class, a function), or a module instance;
            the current directory is importable, as with ``python -m``.
        weights: a ``state_dict`` saved with `torch.save` (or a dict holding one under
            ``"state_dict"``, as foldserve's checkpoints do); None keeps the factory's weights.

    Raises:
        ModuleError: the spec does not resolve, the factory fails or returns no module, or the
            weights do not fit it.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ModuleError(f"--module {spec!r}: expected package.module:factory")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ModuleError(f"--module {spec!r}: {exc}") from None
    module = target if isinstance(target, nn.Module) else _call(target, spec)
    if weights is not None:
        _load_weights(module, Path(weights))
    return module


def read_class_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class labels from a text file, one per line (blank lines skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ModuleError(f"class labels file {str(path)!r}: {exc.strerror}") from None
    return tuple(line.strip() for line in lines if line.strip())


def load_check_inputs(path: str | os.PathLike[str]) -> np.ndarray:
    """Verification examples from a ``.npy`` file."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModuleError(f"check inputs {str(path)!r}: {exc}") from None


def _call(factory: object, spec: str) -> nn.Module:
    if not callable(factory):
        raise ModuleError(f"--module {spec!r} is neither an nn.Module nor callable")
    try:
        module = factory()
    except Exception as exc:  # the user's code: report whatever it raised
        message = f"--module {spec!r}: calling it raised {type(exc).__name__}: {exc}"
        raise ModuleError(message) from exc
    if not isinstance(module, nn.Module):
        raise ModuleError(f"--module {spec!r} returned {type(module).__name__}, not an nn.Module")
    return module


def _load_weights(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ModuleError(f"weights {str(path)!r} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise ModuleError(f"weights {str(path)!r} cannot be read: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModuleError(f"weights {str(path)!r} do not fit the module: {exc}") from None


def _check_inputs(inputs: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if not shape or min(shape) < 1:
        raise ModuleError(f"input shape {list(shape)}: expected positive sizes")
    if inputs is None:
        rng = np.random.default_rng(ONNX_FOLD_SEED)
        inputs = rng.standard_normal((MODULE_CHECK_EXAMPLES, *shape))
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if inputs.shape[1:] != shape or len(inputs) < 2:
        raise ModuleError(
            f"check inputs have shape {list(inputs.shape)}, expected [N >= 2, {list(shape)}]"
        )
    return inputs


def _output_width(module: nn.Module, examples: np.ndarray) -> int:
    """The module's class count, from one run on two examples."""
    try:
        with torch.no_grad():
            output = module(torch.from_numpy(examples))
    except Exception as exc:  # the user's module on the shape they gave
        shape = ", ".join(map(str, examples.shape[1:]))
        raise ModuleError(
            f"the module cannot run on input shape [batch, {shape}]: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != 2:
        got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModuleError(f"the module must return [batch, classes] logits; for 2 examples: {got}")
    return int(output.shape[1])
