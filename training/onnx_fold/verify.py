"""Check a folded graph against the graph it came from, in onnxruntime, on random inputs.

Folding must not change what the model computes: every output of the folded graph must equal the
input graph's within ``tolerance × (scale + |expected|)``, where an output's scale is its largest
|expected| value (float32 arithmetic rounds relative to the values it carries, so an absolute
bar alone would be too strict for large outputs and too loose for small ones). Non-finite values
must sit in the same places; integer and boolean outputs must be equal.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from foldserve.runtime import ort
from foldserve.training.defaults import (
    ONNX_FOLD_BATCH,
    ONNX_FOLD_DIM,
    ONNX_FOLD_SEED,
    ONNX_FOLD_TOLERANCE,
)
from foldserve.training.onnx_fold.report import OnnxFoldError, Verification


def random_feeds(
    model: onnx.ModelProto,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = ONNX_FOLD_SEED,
) -> dict[str, np.ndarray]:
    """Random values for every input the caller feeds (initializers listed as inputs excluded).

    A dimension the graph fixes is kept; a symbolic one becomes `ONNX_FOLD_BATCH` on
    axis 0 and `ONNX_FOLD_DIM` elsewhere, unless ``shapes`` names the input's shape
    (the name ``""`` stands for the only input of a one-input graph).

    Raises:
        OnnxFoldError: an input that is not a numeric or boolean tensor, or ``shapes`` naming
            inputs the graph does not have.
    """
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    fed = [value for value in model.graph.input if value.name not in initializers]
    shapes = _named(shapes or {}, [value.name for value in fed])
    feeds: dict[str, np.ndarray] = {}
    for value in fed:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor.elem_type == onnx.TensorProto.STRING:
            raise OnnxFoldError(f"input {value.name!r} is not a numeric tensor: cannot verify")
        shape = shapes.get(value.name) or _shape(tensor)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[value.name] = rng.random(shape) < 0.5
        else:  # small integers: often indices, which must stay in range
            feeds[value.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds


def verify(
    original: onnx.ModelProto,
    folded: onnx.ModelProto,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = ONNX_FOLD_SEED,
    tolerance: float = ONNX_FOLD_TOLERANCE,
) -> Verification:
    """Run both graphs on the same random inputs and compare every output.

    Raises:
        OnnxFoldError: either graph does not run, or an output differs beyond the tolerance.
    """
    feeds = random_feeds(original, shapes, seed)
    names = [o.name for o in original.graph.output]
    expected = _run(original, feeds, names, "the input model", optimize=False)
    got = _run(folded, feeds, names, "the folded model", optimize=True)
    worst_abs = worst_scaled = 0.0
    for name, want, have in zip(names, expected, got, strict=True):
        abs_error, scale = _compare(name, np.asarray(want), np.asarray(have), tolerance)
        worst_abs = max(worst_abs, abs_error)
        worst_scaled = max(worst_scaled, abs_error / scale)
    return Verification(worst_abs, worst_scaled, {k: tuple(v.shape) for k, v in feeds.items()})


def _compare(
    name: str, want: np.ndarray, have: np.ndarray, tolerance: float
) -> tuple[float, float]:
    """The largest |difference| of one output and its scale; raises when beyond the bar."""
    if want.shape != have.shape:
        raise OnnxFoldError(
            f"output {name!r}: shape {list(have.shape)}, expected {list(want.shape)}"
        )
    if not np.issubdtype(want.dtype, np.floating):
        if not np.array_equal(want, have):
            raise OnnxFoldError(f"output {name!r} differs from the input model's")
        return 0.0, 1.0
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(have)):
        raise OnnxFoldError(f"output {name!r} is not finite where the input model's is finite")
    want64, have64 = want[finite].astype(np.float64), have[finite].astype(np.float64)
    if not want64.size:
        return 0.0, 1.0
    scale = float(np.max(np.abs(want64))) or 1.0
    error = np.abs(have64 - want64)
    allowed = tolerance * (scale + np.abs(want64))
    if np.any(error > allowed):
        raise OnnxFoldError(
            f"output {name!r} differs from the input model's by up to {error.max():.3g} "
            f"({error.max() / scale:.3g} of its scale {scale:.3g}; allowed {tolerance:g} × "
            "(scale + |expected|))"
        )
    return float(error.max()), scale


def _run(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    names: list[str],
    what: str,
    *,
    optimize: bool,
) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    # The input model runs as written (a reference BatchNormalization); the folded one as served.
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return session.run(names, feeds)
    except Exception as exc:  # onnxruntime raises several unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        # Guessed sizes for symbolic dimensions are the likeliest cause a user can fix.
        hint = " (--input-shape NAME=D0,D1,... sets an input's shape)" if _symbolic(model) else ""
        raise OnnxFoldError(
            f"onnxruntime cannot run {what} on random inputs of shapes {shapes}: {first}{hint}"
        ) from None


def _named(shapes: Mapping[str, tuple[int, ...]], inputs: list[str]) -> dict[str, tuple[int, ...]]:
    named = dict(shapes)
    if "" in named:
        if len(inputs) != 1:
            raise OnnxFoldError(f"a shape without an input name, but the inputs are {inputs}")
        named[inputs[0]] = named.pop("")
    unknown = sorted(set(named) - set(inputs))
    if unknown:
        raise OnnxFoldError(f"shapes given for {unknown}, but the inputs are {inputs}")
    return named


def _symbolic(model: onnx.ModelProto) -> bool:
    """Whether some graph input has a dimension without a fixed size."""
    return any(
        not (d.HasField("dim_value") and d.dim_value > 0)
        for value in model.graph.input
        for d in value.type.tensor_type.shape.dim
    )


def _shape(tensor: onnx.TypeProto.Tensor) -> tuple[int, ...]:
    dims = tensor.shape.dim if tensor.HasField("shape") else []
    return tuple(
        d.dim_value
        if d.HasField("dim_value") and d.dim_value > 0
        else (ONNX_FOLD_BATCH if axis == 0 else ONNX_FOLD_DIM)
        for axis, d in enumerate(dims)
    )
