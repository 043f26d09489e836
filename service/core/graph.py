"""What a model's graph says about its inputs and outputs, read from onnxruntime.

Every served model is described by its graph: each input's and output's name, element type and
shape (a dynamic dimension, symbolic or unknown, is None). A graph is *classifier-shaped* when
`Predict` can serve it: one float input whose dimensions past the first are fixed, and an output
of shape [N, classes] (`classifier_of` has the rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from foldserve.core.errors import ModelError
from foldserve.runtime import ort

# onnxruntime's type string -> numpy dtype: the element types the server reads and writes.
ONNX_TYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),  # served as V2 BYTES: object arrays (`core.strings`)
}
PROBABILITIES_HINT = "prob"  # an output whose name holds this is taken as probabilities


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph: name, element type and shape (None: a dynamic dimension;
    the first is the batch axis)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    @property
    def type_name(self) -> str:
        """The element type as people read it: numpy's name ("float32"), "string" for strings."""
        return "string" if self.dtype == np.dtype(object) else self.dtype.name

    @cached_property
    def shown_shape(self) -> list[int]:
        """The shape as the V2 protocol shows it: -1 for a dynamic dimension."""
        return [-1 if d is None else d for d in self.shape]


@dataclass(frozen=True)
class Classifier:
    """How `Predict` runs a classifier-shaped model.

    Attributes:
        input: the one input; `example_shape` is one example's (fixed) shape.
        logits: the output whose argmax is the predicted class.
        probabilities: the output taken as the class probabilities; None: softmax of `logits`.
        classes: the number of classes.
    """

    input: TensorSpec
    example_shape: tuple[int, ...]
    logits: str
    probabilities: str | None
    classes: int

    @cached_property
    def example_size(self) -> int:
        """Values in one example."""
        return int(np.prod(self.example_shape, dtype=np.int64))


def read_tensors(session: ort.InferenceSession, where: str) -> tuple[tuple[TensorSpec, ...], ...]:
    """(inputs, outputs) of a loaded graph, in graph order.

    Raises:
        ModelError: a graph without inputs, or an input or output of a type not served
            (sequences, maps, bfloat16...).
    """
    inputs = tuple(_tensor(arg, "input", where) for arg in session.get_inputs())
    outputs = tuple(_tensor(arg, "output", where) for arg in session.get_outputs())
    if not inputs:
        raise ModelError(f"{where}: the graph has no inputs")
    return inputs, outputs


def _tensor(arg: ort.NodeArg, kind: str, where: str) -> TensorSpec:
    dtype = ONNX_TYPES.get(arg.type)
    if dtype is None:
        served = ", ".join(t.removeprefix("tensor(").removesuffix(")") for t in ONNX_TYPES)
        raise ModelError(
            f"{where}: {kind} {arg.name!r} is {arg.type}; the server serves tensors of {served}"
        )
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or ()))
    return TensorSpec(arg.name, dtype, shape)


def example_feeds(inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """Zeros for every input (empty strings for a string input), each dynamic dimension 1."""
    return {t.name: _zeros([1 if d is None else d for d in t.shape], t.dtype) for t in inputs}


def _zeros(shape: list[int], dtype: np.dtype) -> np.ndarray:
    return np.full(shape, "", dtype) if dtype == np.dtype(object) else np.zeros(shape, dtype)


def check_run(session: ort.InferenceSession, inputs: tuple[TensorSpec, ...], where: str) -> bool:
    """Run the graph once on `example_feeds` (zeros, dynamic dimensions 1).

    Returns:
        True when it ran; False when it failed but some input has a dynamic dimension past the
        first, which 1 may not fit (a window, a sequence longer than a kernel): such a model
        still loads, and a request of a size it cannot take is refused when it comes.

    Raises:
        ModelError: the run failed and every input's dimensions past the first are fixed.
    """
    try:
        session.run(None, example_feeds(inputs))
    except Exception as exc:  # onnxruntime raises several unrelated types
        if any(None in t.shape[1:] for t in inputs):
            return False
        shapes = {t.name: [1 if d is None else d for d in t.shape] for t in inputs}
        raise ModelError(f"{where}: running one example of zeros {shapes} failed: {exc}") from None
    return True


def classifier_of(
    inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> Classifier | str:
    """How `Predict` runs the graph, or why it cannot (a reason to show the caller).

    The rule: exactly one input, of a float type, of rank at least 2, whose first dimension is
    dynamic or 1 and whose others are fixed; and at least one float output of shape [N, classes]
    (classes fixed). Of those outputs (same class count as the first), one whose name contains
    "prob" is taken as the probabilities as they are, and the first other one as the logits; with
    no such other, the probabilities output is the logits too (its argmax is the class); with no
    probabilities output, the probabilities are the softmax of the logits.
    """
    if len(inputs) != 1:
        return f"{len(inputs)} inputs"
    tensor = inputs[0]
    if not tensor.is_float:
        return f"input {tensor.name!r} is {tensor.type_name}, not a float type"
    example = tensor.shape[1:]
    if not example or tensor.shape[0] not in (None, 1) or None in example:
        shown = ["N" if d is None else d for d in tensor.shape]
        return f"input {tensor.name!r} has shape {shown}, not [N, fixed dimensions...]"
    rows = [o for o in outputs if o.is_float and len(o.shape) == 2 and o.shape[1]]
    if not rows:
        return "no float output of shape [N, classes]"
    classes = rows[0].shape[1]
    rows = [o for o in rows if o.shape[1] == classes]
    probabilities = next((o.name for o in rows if PROBABILITIES_HINT in o.name.lower()), None)
    logits = next((o.name for o in rows if o.name != probabilities), probabilities)
    return Classifier(tensor, tuple(example), logits, probabilities, int(classes))  # type: ignore[arg-type]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in the logits' precision."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted
