"""A loaded model: one description for every served model, whoever trained it.

Every model is an ONNX graph with named, typed inputs and outputs (`core.graph`). What foldserve's
metadata adds is optional: class labels, the BN statistics and fold report, the training record
and the shift monitor's taps and calibration. `loading` reads and checks the files.

A file with taps is run as two sessions: predictions without the monitor use a copy of the graph
without the tap nodes (`shift.prune`: onnxruntime would run them on every call otherwise), and the
full graph runs only for a monitor that fetches the taps (`ShiftSource.tapped_session`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from foldserve.contract import TAPS, Adaptation, BNStats, FoldReport, ModelMetadata
from foldserve.core.errors import ModelError, RequestError, failed_precondition
from foldserve.core.graph import Classifier, TensorSpec
from foldserve.core.shift.source import ShiftSource
from foldserve.runtime import ort

if TYPE_CHECKING:
    from foldserve.core.interface import Interface

__all__ = ["Classifier", "Model", "ModelError", "TensorSpec"]


@dataclass(frozen=True)
class Model:
    """A loaded, checked model and its ready onnxruntime session.

    Attributes:
        inputs, outputs: the graph's, in graph order (tap outputs left out); with a
            config.pbtxt, as it serves them (`interface`).
        classifier: how `Predict` runs it; None when it is not classifier-shaped
            (`not_classifier` says why).
        class_labels: position = class index (empty when not a classifier).
        bn_stats, fold_report: the folded BNs' statistics and what folded into what (empty when
            nothing was folded).
        foldserve_version: the foldserve that wrote or folded the file ("" when none did).
        training: what foldserve's training recorded (metrics, data set, architecture); None for
            a model foldserve did not train.
        shift: what the shift monitor watches; None when it cannot run (`shift_off` says why).
        interface: what a Triton config.pbtxt makes of the tensors (batch, dims, reshape);
            None without one.
        adaptation: where an adapted file came from (`foldserve adapt`); None otherwise.
    """

    name: str
    version: str
    path: str
    sha256: str
    opset: int
    session: ort.InferenceSession = field(repr=False, compare=False)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    classifier: Classifier | None
    class_labels: tuple[str, ...] = ()
    not_classifier: str = ""
    bn_stats: tuple[BNStats, ...] = ()
    fold_report: FoldReport = field(default_factory=FoldReport)
    foldserve_version: str = ""
    training: ModelMetadata | None = None
    shift: ShiftSource | None = None
    shift_off: str = ""
    interface: Interface | None = None
    adaptation: Adaptation | None = None

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @cached_property
    def inputs_by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.inputs}

    @cached_property
    def classifier_outputs(self) -> tuple[str, ...]:
        """What a classification fetches: the logits, and the probabilities output if any."""
        classifier = self.require_classifier()
        return tuple(dict.fromkeys(n for n in (classifier.logits, classifier.probabilities) if n))

    def require_classifier(self) -> Classifier:
        """How `Predict` runs the model.

        Raises:
            RequestError: FAILED_PRECONDITION for a model that is not classifier-shaped.
        """
        if self.classifier is None:
            raise self._not_a_classifier()
        return self.classifier

    def _not_a_classifier(self) -> RequestError:
        return failed_precondition(
            f"model {self.name!r} is not classifier-shaped ({self.not_classifier}); use the V2 "
            "ModelInfer API"
        )

    def run(
        self, feeds: dict[str, np.ndarray], names: Sequence[str], tapped: bool = False
    ) -> dict[str, np.ndarray]:
        """Run the graph on inputs by name; the named outputs by name.

        Args:
            tapped: run the graph with its taps (`shift.tapped_session`), so `names` may hold
                the `taps` output.
        """
        session = self.shift.tapped_session if tapped and self.shift else self.session
        return dict(zip(names, session.run(list(names), feeds), strict=True))  # type: ignore[union-attr]

    def run_classifier(self, batch: np.ndarray, taps: bool = False) -> dict[str, np.ndarray]:
        """Run a classifier-shaped model on a batch of its input: every output by name (with
        `taps`: the graph's `taps` output too)."""
        names = (*self.output_names, TAPS) if taps else self.output_names
        return self.run({self.require_classifier().input.name: batch}, names, tapped=taps)
