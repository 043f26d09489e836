"""Check a re-fold, and compare the adapted model with its source, on the adaptation sample.

The check rebuilds the adaptation the slow way: the *source* graph with each correction as
explicit Mul and Add nodes around its layer (what the re-fold multiplied into the weights), run
beside the re-folded graph; the two must agree, as a fold's verification demands of a fold.
It also checks what a fold's verification checks of any served graph: the same nodes as the
source (no BatchNormalization node comes back, none goes), each example's answer independent of
its batch, and, where the `onnx` package is installed (the training install), its checker.
The comparison needs no labels: how often the two predict the same class, and the mean entropy
of each one's predicted distribution (a re-normalization that cannot undo a shift, inversion
for one, shows as low agreement and a changed entropy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foldserve.core.adapt.estimate import Corrections, run_graph, session
from foldserve.core.adapt.onnx_file import DTYPES, OnnxFile

# |re-folded − explicit| ≤ TOLERANCE × (output scale + |explicit|). Both graphs are float32:
# where a BN's training variance was ~0 (a pixel always blank) its scale is γ/√ε and large terms
# cancel, so the two differ by up to ~1e-4 of the logits' scale (digits, inverted); a wrong
# re-fold differs by the order of the logits themselves.
TOLERANCE = 1e-3
BATCH_PROBES = 8  # examples run one at a time against the batch (batch invariance)


class AdaptError(ValueError):
    """A model that cannot be adapted, or an adaptation that failed its check; the message names
    the layer, field or file."""


@dataclass(frozen=True)
class Signals:
    """The adapted model against its source on one sample, without labels."""

    agreement: float
    entropy_source: float
    entropy_adapted: float


def explicit(source: OnnxFile, corrections: Sequence[Corrections]) -> OnnxFile:
    """The source graph with every correction as Mul and Add nodes around its layer."""
    graph = source.copy()
    before = {c.layer.position: c for c in corrections if c.input_fix is not None}
    after = {c.layer.output: c for c in corrections if c.output_fix is not None}
    ordered: list = []
    for position, node in enumerate(graph.nodes):
        tag = f"foldserve_adapt_check_{position}"
        fixes = before.get(position)
        if fixes is not None:
            rank = fixes.ranks[fixes.layer.input]
            node.input[0] = _affine(graph, f"{tag}_in", node.input[0], fixes, rank, ordered)
        ordered.append(node)
        fixes = after.get(node.output[0]) if node.output else None
        if fixes is not None:
            output = node.output[0]
            node.output[0] = f"{tag}_unadapted"
            rank = fixes.ranks[output]
            _affine(graph, f"{tag}_out", node.output[0], fixes, rank, ordered, output)
    graph.set_nodes(ordered)
    return graph


def _affine(
    graph: OnnxFile,
    tag: str,
    value: str,
    fixes: Corrections,
    rank: int,
    ordered: list,
    output: str | None = None,
) -> str:
    """Append `value · scale + shift` (per channel, axis 1) to `ordered`, the input correction
    of `fixes` (the output one with `output`: the name it writes); its output's name."""
    fix = fixes.input_fix if output is None else fixes.output_fix
    shape = (-1,) + (1,) * (rank - 2)
    dtype = DTYPES[graph.elem_type(fixes.layer.weight)]
    graph.add_initializer(f"{tag}_scale", fix.scale.reshape(shape).astype(dtype))
    graph.add_initializer(f"{tag}_shift", fix.shift.reshape(shape).astype(dtype))
    scaled, result = f"{tag}_scaled", output or f"{tag}_fixed"
    ordered.append(graph.new_node("Mul", [value, f"{tag}_scale"], [scaled], f"{tag}_mul"))
    ordered.append(graph.new_node("Add", [scaled, f"{tag}_shift"], [result], f"{tag}_add"))
    return result


def compare(got: np.ndarray, want: np.ndarray, name: str) -> float:
    """The largest |got − want| as a fraction of the tolerance (`TOLERANCE` × (output scale +
    |want|)); above 1 raises.

    Raises:
        AdaptError: the re-folded graph differs from the explicit one.
    """
    b64 = want.astype(np.float64)
    difference = np.abs(got.astype(np.float64) - b64)
    bound = TOLERANCE * (np.abs(b64).max() + np.abs(b64))
    ratio = float((difference / np.maximum(bound, 1e-30)).max())
    if ratio > 1:
        raise AdaptError(
            f"the re-folded graph differs from the source with explicit corrections on output "
            f"{name!r}: max |difference| {difference.max():.3g}"
        )
    return ratio


def check_adapted(
    source: bytes, adapted: bytes, corrections: Sequence[Corrections], input_name: str,
    inputs: np.ndarray, logits: str,
) -> tuple[float, np.ndarray]:  # fmt: skip
    """Every check of the adapted graph: the re-fold's largest difference from the explicit
    corrections, as a fraction of the tolerance, and the adapted logits on `inputs`.

    Raises:
        AdaptError: a check failed; the message says which.
    """
    before, after = OnnxFile(source), OnnxFile(adapted)
    if [n.op_type for n in before.nodes] != [n.op_type for n in after.nodes]:
        raise AdaptError("the adapted graph's nodes differ from the source's")
    if any(n.op_type == "BatchNormalization" for n in after.nodes):
        raise AdaptError("the adapted graph holds BatchNormalization nodes")
    _onnx_check(adapted)
    runner = session(adapted)
    (got,) = run_graph(runner, input_name, inputs, [logits])
    (want,) = run_graph(explicit(before, corrections).to_bytes(), input_name, inputs, [logits])
    ratio = compare(got, want, logits)
    for i in range(min(BATCH_PROBES, len(inputs))):
        (alone,) = run_graph(runner, input_name, inputs[i : i + 1], [logits])
        if not np.allclose(alone[0], got[i], rtol=1e-4, atol=1e-4 * np.abs(got).max()):
            raise AdaptError(f"example {i}'s logits depend on its batch")
    return ratio, got


def _onnx_check(data: bytes) -> None:
    """The `onnx` checker, where the package is installed (the serving install lacks it and
    relies on onnxruntime's checks on loading)."""
    try:
        import onnx
    except ImportError:
        return
    try:
        onnx.checker.check_model(onnx.load_model_from_string(data))
    except onnx.checker.ValidationError as exc:
        raise AdaptError(f"the onnx checker refuses the adapted graph: {exc}") from None


def signals(source_logits: np.ndarray, adapted_logits: np.ndarray) -> Signals:
    """Agreement and mean prediction entropies of two models' logits on one sample."""
    return Signals(
        agreement=float((source_logits.argmax(1) == adapted_logits.argmax(1)).mean()),
        entropy_source=mean_entropy(source_logits),
        entropy_adapted=mean_entropy(adapted_logits),
    )


def mean_entropy(logits: np.ndarray) -> float:
    """The mean entropy (nats) of softmax(`logits`) over the rows."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(np.exp(log_p) * log_p).sum(axis=1).mean())
