"""Finding a model's shift reference at load, and checking that it fits the model.

Where a reference may be, first found first:

1. `shift-reference.json` beside the model file (`contract.SHIFT_REFERENCE_FILE`; `foldserve
   calibrate` writes it by default, for any model, and a repository's `DIR/<version>/` holds its
   own beside each `model.onnx`);
2. the model file's metadata (`foldserve.shift_reference`: `foldserve train` / `export` write it,
   `foldserve calibrate --out M.onnx` too);
3. for a file without foldserve metadata whose input a folded BN read, that BN's statistics
   (`input_tap`).
"""

from __future__ import annotations

from pathlib import Path

from foldserve import contract
from foldserve.contract import (
    SHIFT_REFERENCE_FILE,
    SOURCE_INPUT,
    SOURCE_PROBABILITIES,
    SOURCE_TAPS,
    TAPS,
    BNStats,
    ContractError,
    ModelMetadata,
    ShiftReference,
)
from foldserve.core.errors import ModelError
from foldserve.core.graph import Classifier
from foldserve.core.shift.input_tap import NULL_DATA, input_bn, input_bn_reference
from foldserve.core.shift.source import ShiftSource, check_fits, group_taps
from foldserve.runtime import ort

MONITOR_OFF = "the server runs with --shift-monitor off"
NOT_CLASSIFIER = "the model is not classifier-shaped"
NO_REFERENCE = (
    "no shift reference: export the model again with this foldserve, or run `foldserve "
    "calibrate --model M --data D`"
)
LEGACY = (
    "the model file carries foldserve 0.1's shift calibration, which this server no longer "
    "runs: export it again, or run `foldserve calibrate --model M --data D`"
)
NO_INPUT_BN = (
    "no shift reference: run `foldserve calibrate --model M --data D` (a sample of its inputs), "
    "or fold it with `foldserve fold` when a BN reads its vector input"
)
FROM_FILE = "reference file beside the model"
FROM_METADATA = "model file metadata"
FROM_INPUT_BN = "input BatchNorm statistics"


def shift_fields(
    file: Path,
    properties: dict[str, str],
    metadata: ModelMetadata | None,
    bn_stats: tuple[BNStats, ...],
    classifier: Classifier | None,
    full: ort.InferenceSession,
    monitor: bool,
) -> dict[str, object]:
    """The model's `shift` (a `ShiftSource`) or `shift_off` (why there is none).

    Raises:
        ModelError: a reference that cannot be read, or (with the monitor on) does not fit.
    """
    where = f"model file {str(file)!r}"
    found = _reference(file, properties, metadata, where)
    if found is None:
        stats = input_bn(bn_stats, classifier) if metadata is None else None
        if stats is None:
            if metadata is None:
                return {"shift_off": NO_INPUT_BN}
            return {
                "shift_off": LEGACY if contract.has_legacy_calibration(properties) else NO_REFERENCE
            }
        found = (input_bn_reference(stats), FROM_INPUT_BN)
    if classifier is None:
        return {"shift_off": NOT_CLASSIFIER}
    if not monitor:
        return {"shift_off": MONITOR_OFF}
    reference, origin = found
    return {"shift": _source(reference, origin, metadata, classifier, full, where)}


def _reference(
    file: Path, properties: dict[str, str], metadata: ModelMetadata | None, where: str
) -> tuple[ShiftReference, str] | None:
    beside = file.parent / SHIFT_REFERENCE_FILE
    try:
        if beside.is_file():
            text = beside.read_text()
            return contract.parse_shift_reference(text, str(beside)), FROM_FILE
        if metadata is not None:  # read with the rest of foldserve's metadata
            reference = metadata.shift_reference
        else:
            reference = contract.read_shift_reference(properties)
    except (ContractError, OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where}: shift reference: {exc}") from None
    return (reference, FROM_METADATA) if reference is not None else None


def _source(
    reference: ShiftReference,
    origin: str,
    metadata: ModelMetadata | None,
    classifier: Classifier,
    full: ort.InferenceSession,
    where: str,
) -> ShiftSource:
    widths = {SOURCE_INPUT: classifier.example_size, SOURCE_PROBABILITIES: classifier.classes}
    taps = metadata.taps if metadata is not None else ()
    taps_width = _taps_width(metadata, full)
    if taps_width:
        widths[SOURCE_TAPS] = taps_width
    try:
        check_fits(reference, widths, classifier.classes)
    except ValueError as exc:
        raise ModelError(f"{where}: shift reference ({origin}): {exc}") from None
    used = {g.source for g in reference.groups}
    return ShiftSource(
        reference=reference,
        taps=group_taps(reference, taps),
        widths={s: w for s, w in widths.items() if s in used},
        origin=NULL_DATA if origin == FROM_INPUT_BN else origin,
        probabilities=classifier.probabilities,
        logits=classifier.logits,
        tapped_session=full if SOURCE_TAPS in used else None,
    )


def _taps_width(metadata: ModelMetadata | None, full: ort.InferenceSession) -> int:
    """Values per example of the graph's `taps` output: as the metadata's taps declare, or as
    the graph says (0: the graph has none)."""
    output = next((o for o in full.get_outputs() if o.name == TAPS), None)
    if output is None:
        return 0
    if metadata is not None and metadata.taps:
        units = {s.layer: s.num_features for s in metadata.bn_stats}
        return sum(tap.moments * units.get(tap.layer, 0) for tap in metadata.taps)
    width = output.shape[-1] if output.shape else None
    return width if isinstance(width, int) else 0
