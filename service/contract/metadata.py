"""The metadata keys of a model file, and the writer and parser of its `metadata_props`.

Every value is a string (JSON where the field is not text):

| key | field | value |
| --- | --- | --- |
| `foldserve.format` | `format` | metadata format version, `1` |
| `foldserve.version` | `foldserve_version` | version of foldserve that wrote the file |
| `foldserve.model_version` | `model_version` | the model's version |
| `foldserve.created` | `created` | ISO-8601 UTC creation time |
| `foldserve.dataset` | `dataset` | data set name |
| `foldserve.arch` | `arch` | network architecture (`mlp`, `cnn`) |
| `foldserve.input_name` | `input_name` | name of the graph input |
| `foldserve.input_shape` | `input_shape` | JSON list: one example's shape, no batch dimension |
| `foldserve.input_dtype` | `input_dtype` | `float32` |
| `foldserve.output_names` | `output_names` | JSON list: `["logits", "probabilities"]` |
| `foldserve.class_labels` | `class_labels` | JSON list of strings; position = class index |
| `foldserve.bn_stats` | `bn_stats` | JSON list of `BNStats` objects, one per folded BN |
| `foldserve.fold_report` | `fold_report` | JSON `FoldReport`: `folded` and `left` |
| `foldserve.training_metrics` | `training_metrics` | JSON object: accuracies, epochs, data split |
| `foldserve.taps` | `taps` | optional; JSON list of `Tap` objects (`contract.shift`) |
| `foldserve.shift_reference` | `shift_reference` | optional; JSON `ShiftReference` |
| `foldserve.adaptation` | `adaptation` | optional; JSON `Adaptation` (`contract.adaptation`) |

A file foldserve did not train may carry only `bn_stats`, `fold_report` and `version` of these
(`fold_properties` writes them, `read_fold_properties` reads them): `foldserve fold` records
what it folded in someone else's ONNX file that way.

Extending the format: a new key becomes a field with a default, so files without it still
parse; a reader ignores `foldserve.*` keys it does not know. `format` changes only when an
existing key changes meaning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from foldserve.contract.fields import ContractError
from foldserve.contract.metadata_values import class_labels, decode, legacy_fold_report, shape
from foldserve.contract.records import Adaptation, BNStats, FoldReport
from foldserve.contract.reference import ShiftReference
from foldserve.contract.shift import Tap

FORMAT_VERSION = "1"
INPUT_NAME = "input"
INPUT_DTYPE = "float32"
LOGITS = "logits"
PROBABILITIES = "probabilities"
OUTPUT_NAMES = (LOGITS, PROBABILITIES)

# field of `ModelMetadata` -> metadata key, in the order the table above documents.
KEYS = {
    "format": "foldserve.format",
    "foldserve_version": "foldserve.version",
    "model_version": "foldserve.model_version",
    "created": "foldserve.created",
    "dataset": "foldserve.dataset",
    "arch": "foldserve.arch",
    "input_name": "foldserve.input_name",
    "input_shape": "foldserve.input_shape",
    "input_dtype": "foldserve.input_dtype",
    "output_names": "foldserve.output_names",
    "class_labels": "foldserve.class_labels",
    "bn_stats": "foldserve.bn_stats",
    "fold_report": "foldserve.fold_report",
    "training_metrics": "foldserve.training_metrics",
    "taps": "foldserve.taps",
    "shift_reference": "foldserve.shift_reference",
    "adaptation": "foldserve.adaptation",
}
# Keys of earlier formats that a reader recognises only to say what became of them.
LEGACY_KEYS = {"shift_calibration": "foldserve.shift_calibration"}  # foldserve 0.1's monitor
# Keys that files written before the shift monitor lack: written only when set, optional to read.
OPTIONAL_FIELDS = frozenset({"taps", "shift_reference", "adaptation"})
FORMAT_KEY = KEYS["format"]
TEXT_FIELDS = frozenset(
    {"format", "foldserve_version", "model_version", "created", "dataset", "arch", "input_name"}
    | {"input_dtype"}
)


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a model file says about itself beside the graph (fields: the table above)."""

    model_version: str
    created: str
    dataset: str
    arch: str
    input_shape: tuple[int, ...]
    class_labels: tuple[str, ...]
    foldserve_version: str
    bn_stats: tuple[BNStats, ...] = ()
    fold_report: FoldReport = field(default_factory=FoldReport)
    training_metrics: Mapping[str, Any] = field(default_factory=dict)
    input_name: str = INPUT_NAME
    input_dtype: str = INPUT_DTYPE
    output_names: tuple[str, ...] = OUTPUT_NAMES
    format: str = FORMAT_VERSION
    taps: tuple[Tap, ...] = ()
    shift_reference: ShiftReference | None = None
    adaptation: Adaptation | None = None

    @property
    def input_bn(self) -> BNStats | None:
        """The folded BN over the raw model input, if the network had one."""
        return next((s for s in self.bn_stats if s.reads_model_input), None)


def to_properties(metadata: ModelMetadata) -> dict[str, str]:
    """The `metadata_props` of a model file: one string per key."""
    values = {
        **{name: getattr(metadata, name) for name in TEXT_FIELDS},
        "input_shape": json.dumps(list(metadata.input_shape)),
        "output_names": json.dumps(list(metadata.output_names)),
        "class_labels": json.dumps(list(metadata.class_labels)),
        "bn_stats": _bn_stats_json(metadata.bn_stats),
        "fold_report": json.dumps(metadata.fold_report.to_json()),
        "training_metrics": json.dumps(dict(metadata.training_metrics)),
    }
    if metadata.taps:
        values["taps"] = json.dumps([tap.to_json() for tap in metadata.taps])
    if metadata.shift_reference is not None:
        values["shift_reference"] = json.dumps(metadata.shift_reference.to_json())
    if metadata.adaptation is not None:
        values["adaptation"] = json.dumps(metadata.adaptation.to_json())
    return {key: str(values[name]) for name, key in KEYS.items() if name in values}


def fold_properties(
    bn_stats: Sequence[BNStats], report: FoldReport, foldserve_version: str
) -> dict[str, str]:
    """The `metadata_props` that record a fold, and only those: `bn_stats`, `fold_report` and
    `foldserve_version`.

    For a model file foldserve did not write (`foldserve fold` on someone else's ONNX file): the
    file keeps its own metadata, gains these three keys, and the shift monitor can read the
    folded BN statistics back with `read_fold_properties`.
    """
    return {
        KEYS["bn_stats"]: _bn_stats_json(bn_stats),
        KEYS["fold_report"]: json.dumps(report.to_json()),
        KEYS["foldserve_version"]: foldserve_version,
    }


def read_fold_properties(
    properties: Mapping[str, str],
) -> tuple[tuple[BNStats, ...], FoldReport] | None:
    """The folded BN statistics and the fold report of a file, None when it records no fold.

    Works on any file, with or without the rest of foldserve's metadata.

    Raises:
        ContractError: one of the two keys without the other, or a value of the wrong form;
            the message names the key.
    """
    names = ("bn_stats", "fold_report")
    present = [name for name in names if KEYS[name] in properties]
    if not present:
        return None
    if len(present) < len(names):
        missing = next(KEYS[name] for name in names if name not in present)
        raise ContractError(
            f"metadata key {missing} missing: {KEYS[present[0]]} is written only together with it"
        )
    return _bn_stats(properties), _fold_report(properties)


def has_legacy_calibration(properties: Mapping[str, str]) -> bool:
    """True when the file carries foldserve 0.1's shift calibration (thresholds of a statistic
    the server no longer runs)."""
    return LEGACY_KEYS["shift_calibration"] in properties


def has_metadata(properties: Mapping[str, str]) -> bool:
    """True when the properties carry foldserve metadata at all."""
    return FORMAT_KEY in properties


def from_properties(properties: Mapping[str, str]) -> ModelMetadata:
    """Parse and check a model file's `metadata_props`.

    Raises:
        ContractError: no foldserve metadata, an unsupported format, a missing key, or a value
            of the wrong form; the message names the key.
    """
    if not has_metadata(properties):
        raise ContractError(
            f"no foldserve metadata (key {FORMAT_KEY!r} missing); "
            "export it with `foldserve train` or `foldserve export`"
        )
    if properties[FORMAT_KEY] != FORMAT_VERSION:
        raise ContractError(
            f"metadata format {properties[FORMAT_KEY]!r} is not supported "
            f"(expected {FORMAT_VERSION!r})"
        )
    missing = [
        key for name, key in KEYS.items() if key not in properties and name not in OPTIONAL_FIELDS
    ]
    if missing:
        raise ContractError(f"metadata key(s) missing: {', '.join(missing)}")
    metadata = ModelMetadata(
        **{name: properties[KEYS[name]] for name in TEXT_FIELDS},
        input_shape=shape(_decode(properties, "input_shape", list), KEYS["input_shape"]),
        output_names=tuple(str(n) for n in _decode(properties, "output_names", list)),
        class_labels=class_labels(_decode(properties, "class_labels", list), KEYS["class_labels"]),
        bn_stats=_bn_stats(properties),
        fold_report=_fold_report(properties),
        training_metrics=_decode(properties, "training_metrics", dict),
        **_shift_fields(properties),
    )
    if metadata.input_dtype != INPUT_DTYPE:
        raise ContractError(
            f"{KEYS['input_dtype']} is {metadata.input_dtype!r}; only {INPUT_DTYPE!r} is served"
        )
    return metadata


def _bn_stats_json(bn_stats: Sequence[BNStats]) -> str:
    return json.dumps([s.to_json() for s in bn_stats])


def _bn_stats(properties: Mapping[str, str]) -> tuple[BNStats, ...]:
    return tuple(
        BNStats.from_json(entry, f"{KEYS['bn_stats']}[{i}]")
        for i, entry in enumerate(_decode(properties, "bn_stats", list))
    )


def _fold_report(properties: Mapping[str, str]) -> FoldReport:
    raw = _decode(properties, "fold_report", dict)
    return FoldReport.from_json(legacy_fold_report(raw), KEYS["fold_report"])


def _shift_fields(properties: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if KEYS["taps"] in properties:
        found["taps"] = tuple(
            Tap.from_json(entry, f"{KEYS['taps']}[{i}]")
            for i, entry in enumerate(_decode(properties, "taps", list))
        )
    reference = read_shift_reference(properties)
    if reference is not None:
        found["shift_reference"] = reference
    adaptation = read_adaptation(properties)
    if adaptation is not None:
        found["adaptation"] = adaptation
    return found


def read_adaptation(properties: Mapping[str, str]) -> Adaptation | None:
    """The adaptation a file records (`contract.adaptation`), None for a file not adapted.

    Raises:
        ContractError: a value of the wrong form; the message names the key.
    """
    if KEYS["adaptation"] not in properties:
        return None
    return Adaptation.from_json(_decode(properties, "adaptation", dict), KEYS["adaptation"])


def read_shift_reference(properties: Mapping[str, str]) -> ShiftReference | None:
    """The shift monitor's reference a file's metadata carries (any file: `foldserve
    calibrate` may write one into a model foldserve did not train), None when it has none.

    Raises:
        ContractError: a value of the wrong form; the message names the key.
    """
    if KEYS["shift_reference"] not in properties:
        return None
    value = _decode(properties, "shift_reference", dict)
    return ShiftReference.from_json(value, KEYS["shift_reference"])


def shift_reference_properties(reference: ShiftReference) -> dict[str, str]:
    """The one metadata key that carries a shift reference."""
    return {KEYS["shift_reference"]: json.dumps(reference.to_json())}


def parse_shift_reference(text: str, where: str) -> ShiftReference:
    """A reference file's text (`SHIFT_REFERENCE_FILE`: the JSON of the metadata key's value).

    Raises:
        ContractError: not JSON, or not a reference; the message names `where`.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"{where} is not valid JSON ({exc})") from None
    return ShiftReference.from_json(value, where)


def _decode(properties: Mapping[str, str], name: str, kind: type) -> Any:
    return decode(properties, KEYS[name], kind)
