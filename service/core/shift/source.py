"""What a model's shift monitor watches, and where each example's row comes from.

A reference (`contract.ShiftReference`) names its groups' sources: the model input (flattened),
the graph's `taps` output (a model foldserve exported: every tapped BN's pre-activations end to
end) and the class probabilities (the classifier's probabilities output, or the softmax of its
logits). `ShiftSource` knows which of them a model's reference reads, fetches `taps` only when it
does, and lays the sources of each example end to end: the row `ShiftMonitor.observe` takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from foldserve.contract import (
    MODEL_INPUT,
    MODEL_OUTPUT,
    SOURCE_PROBABILITIES,
    SOURCE_TAPS,
    SOURCES,
    TAPS,
    ShiftReference,
    Tap,
)
from foldserve.runtime import ort


@dataclass(frozen=True)
class ShiftSource:
    """The sources of one model's monitor and its reference.

    Attributes:
        reference: what the tests run against.
        taps: what each group shows, by group name: the graph's tap of a BN layer, or the model
            input (`model_input`) or output (`model_output`).
        widths: each source the reference reads, and its width (values per example).
        origin: where the reference came from (the file's metadata, a reference file beside it,
            a folded input BN's statistics).
        probabilities: the output holding the class probabilities; None: softmax of `logits`.
        logits: the output whose argmax is the predicted class.
        tapped_session: the graph with its `taps` output, when the reference reads it.
    """

    reference: ShiftReference
    taps: tuple[Tap, ...]
    widths: dict[str, int]
    origin: str
    probabilities: str | None
    logits: str
    tapped_session: ort.InferenceSession | None = field(default=None, repr=False, compare=False)

    @property
    def extra_outputs(self) -> tuple[str, ...]:
        """Graph outputs a monitored run fetches besides what the caller asked for."""
        return (TAPS,) if SOURCE_TAPS in self.widths else ()

    @property
    def offsets(self) -> dict[str, int]:
        """Where each source starts in a row."""
        offsets, at = {}, 0
        for source in SOURCES:
            if source in self.widths:
                offsets[source], at = at, at + self.widths[source]
        return offsets

    @property
    def width(self) -> int:
        return sum(self.widths.values())

    def rows(self, model_input: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """One row per example of a run ([N, width]), from its input and `outputs` (from which
        the `taps` output is taken out)."""
        parts = self.parts(model_input, outputs)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def parts(
        self, model_input: np.ndarray, outputs: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, ...]:
        """The rows of a run as their sources' parts (`[N, width]` each, end to end), which
        `ShiftMonitor.observe` keeps without a concatenation."""
        reads_input, reads_taps, reads_probabilities = self._reads
        parts: list[np.ndarray] = []
        if reads_input:
            parts.append(model_input.reshape(model_input.shape[0], -1))
        if reads_taps:
            parts.append(outputs.pop(TAPS))
        if reads_probabilities:
            name = self.probabilities
            parts.append(outputs[name] if name is not None else self._probabilities(outputs))
        return tuple(parts)

    @cached_property
    def _reads(self) -> tuple[bool, bool, bool]:
        return tuple(source in self.widths for source in SOURCES)  # type: ignore[return-value]

    def _probabilities(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        if self.probabilities is not None:
            return outputs[self.probabilities]
        logits = outputs[self.logits].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def group_taps(reference: ShiftReference, taps: tuple[Tap, ...]) -> tuple[Tap, ...]:
    """What each group shows: its BN layer's tap, or the model's input or output."""
    by_layer = {tap.layer: tap for tap in taps}
    shown = []
    for group in reference.groups:
        if group.source == SOURCE_TAPS and group.name in by_layer:
            shown.append(by_layer[group.name])
        elif group.source == SOURCE_PROBABILITIES:
            shown.append(Tap(group.name, group.name, MODEL_OUTPUT))
        else:
            shown.append(Tap(group.name, group.name, MODEL_INPUT))
    return tuple(shown)


def check_fits(reference: ShiftReference, widths: dict[str, int], classes: int) -> None:
    """Every group within its source, and class priors for the model's classes.

    Raises:
        ValueError: what does not fit, naming the group.
    """
    for group in reference.groups:
        if group.source not in widths:
            raise ValueError(f"group {group.name!r} reads {group.source!r}, which the model lacks")
        if group.start + group.width > widths[group.source]:
            raise ValueError(
                f"group {group.name!r} reads values {group.start}..{group.start + group.width} "
                f"of {group.source!r}, which has {widths[group.source]} per example"
            )
    if reference.class_priors and len(reference.class_priors) != classes:
        raise ValueError(f"{len(reference.class_priors)} class priors for {classes} classes")
