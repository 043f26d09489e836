"""A loaded model: its file's metadata (or, for a model foldserve did not train, what its graph
says) and ready onnxruntime sessions. `loading` reads and checks the files.

A file with taps is run as two sessions: predictions without the monitor use a copy of the graph
without the tap nodes (`onnx_prune`: onnxruntime would run them on every call otherwise), and the
full graph runs only for a monitor that fetches the taps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from service.contract import (
    LOGITS,
    PROBABILITIES,
    TAPS,
    BNStats,
    FoldReport,
    ModelMetadata,
    Tap,
)
from service.core.errors import ModelError, RequestError, failed_precondition
from service.core.foreign import Foreign
from service.core.foreign_shift import input_taps
from service.core.graph_spec import softmax
from service.runtime import ort

__all__ = ["Model", "ModelError", "TensorSpec"]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: its name, numpy dtype and one example's shape."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @cached_property
    def size(self) -> int:
        """Values in one example."""
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Model:
    """A loaded, checked model: what its file says and a ready onnxruntime session.

    `metadata` is the file's foldserve metadata; None for a model foldserve did not train,
    whose graph `foreign` describes instead.
    """

    name: str
    version: str
    path: str
    sha256: str
    opset: int
    metadata: ModelMetadata | None
    session: ort.InferenceSession = field(repr=False, compare=False)
    # The full graph, with the taps: only for a model whose shift monitor is on.
    tapped_session: ort.InferenceSession | None = field(default=None, repr=False, compare=False)
    foreign: Foreign | None = None

    @cached_property
    def input(self) -> TensorSpec:
        """The input `Predict` fills, one example's shape.

        Raises:
            RequestError: FAILED_PRECONDITION for a model that is not classifier-shaped.
        """
        if self.foreign is None:
            meta = self.metadata
            return TensorSpec(meta.input_name, np.dtype(np.float32), meta.input_shape)  # type: ignore[union-attr]
        classifier = self.foreign.classifier
        if classifier is None:
            raise self._not_classifier()
        return TensorSpec(classifier.input.name, classifier.input.dtype, classifier.input_shape)

    def _not_classifier(self) -> RequestError:
        reason = self.foreign.reason  # type: ignore[union-attr]
        return failed_precondition(
            f"model {self.name!r} is not classifier-shaped ({reason}); use the V2 ModelInfer API"
        )

    @cached_property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """A foldserve model's outputs, one example's shape (a foreign model: `foreign.graph`)."""
        classes = (len(self.class_labels),)
        return tuple(TensorSpec(n, np.dtype(np.float32), classes) for n in self.output_names)

    @property
    def class_labels(self) -> tuple[str, ...]:
        if self.foreign is not None:
            return self.foreign.class_labels
        return self.metadata.class_labels  # type: ignore[union-attr]

    @property
    def output_names(self) -> tuple[str, ...]:
        if self.foreign is not None:
            return self.foreign.graph.output_names
        return self.metadata.output_names  # type: ignore[union-attr]

    @property
    def bn_stats(self) -> tuple[BNStats, ...]:
        return self.foreign.bn_stats if self.foreign else self.metadata.bn_stats  # type: ignore[union-attr]

    @property
    def fold_report(self) -> FoldReport:
        return self.foreign.fold_report if self.foreign else self.metadata.fold_report  # type: ignore[union-attr]

    @property
    def taps(self) -> tuple[Tap, ...]:
        """The shift monitor's taps (a foreign model: the input BN's, computed by the server)."""
        if self.foreign is not None:
            return (self.foreign.shift[0],) if self.foreign.shift else ()
        return self.metadata.taps  # type: ignore[union-attr]

    @property
    def foldserve_version(self) -> str:
        """The foldserve that wrote (or, for a foreign file, folded) it; "" for none."""
        if self.foreign is not None:
            return self.foreign.foldserve_version
        return self.metadata.foldserve_version  # type: ignore[union-attr]

    def run(self, batch: np.ndarray, taps: bool = False) -> dict[str, np.ndarray]:
        """Run the model as a classifier on a batch of shape [N, *input shape].

        Args:
            taps: also return the `taps` output ([N, width]); only for a model loaded with its
                monitor on (`tapped_session`).

        Returns:
            Every output by name, each float32 of shape [N, classes] (and `taps`); for a
            classifier-shaped foreign model, its logits and probabilities under the contract's
            names `logits` and `probabilities`.
        """
        if self.foreign is not None:
            return self._run_classifier(batch, taps)
        names = self.output_names
        if taps:
            wanted = (*names, TAPS)
            values = self.tapped_session.run(wanted, {self.input.name: batch})  # type: ignore[union-attr]
            return dict(zip(wanted, values, strict=True))
        return dict(zip(names, self.session.run(names, {self.input.name: batch}), strict=True))

    def _run_classifier(self, batch: np.ndarray, taps: bool) -> dict[str, np.ndarray]:
        classifier = self.foreign.classifier  # type: ignore[union-attr]
        if classifier is None:
            raise self._not_classifier()
        probabilities = classifier.probabilities
        names = [classifier.logits]
        if probabilities is not None and probabilities != classifier.logits:
            names.append(probabilities)
        values = dict(
            zip(names, self.session.run(names, {classifier.input.name: batch}), strict=True)
        )
        logits = values[classifier.logits]
        found = values[probabilities] if probabilities is not None else softmax(logits.copy())
        if taps:  # the input BN's tap, computed here (`foreign_shift`)
            return {LOGITS: logits, PROBABILITIES: found, TAPS: input_taps(batch)}
        return {LOGITS: logits, PROBABILITIES: found}

    def run_graph(self, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        """Run the graph on inputs by name; the named outputs by name."""
        return dict(zip(names, self.session.run(names, feeds), strict=True))
