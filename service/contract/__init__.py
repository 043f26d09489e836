"""The model-file contract: what a foldserve `model.onnx` carries besides its graph.

Training writes a model file through `to_properties`, the server reads it back through
`from_properties`, and the test fixtures build theirs the same way; a fold of someone else's
ONNX file records just its BN statistics and fold report, through `fold_properties` and
`read_fold_properties`. No other module spells a metadata key. Everything travels in the ONNX
file's `metadata_props` under the keys of `foldserve.contract.metadata` (its docstring has the
table), as typed records:

- `ModelMetadata`: the whole of it, one field per key;
- `BNStats`: one folded BatchNorm's statistics (the shift monitor's reference);
- `FoldReport` (`FoldedLayer`, `LeftLayer`): what folded into what, what was left and why;
- `Tap`, `ShiftReference` (`SummaryGroup`): the shift monitor's graph outputs and the reference
  its sequential tests run against (`foldserve.contract.shift` documents both); the reference may
  also sit beside the model file (`SHIFT_REFERENCE_FILE`, read with `parse_shift_reference`);
- `Adaptation`: where an adapted file came from (`foldserve adapt`; `contract.adaptation`:
  `adapted_properties` writes an adapted file's metadata, `read_adaptation` reads its record);
- `ModelConfig`: the optional `config.json` next to a model file (`foldserve.contract.config`:
  its keys), read with `parse_config`.

Graph names are part of the contract too: the input `input` and the outputs `logits` and
`probabilities` (softmax of the logits), each `[batch, classes]`, and the optional taps
`tap.<layer>` (`tap_name`), each `[batch, 2 · channels]`, and `taps`, all of them end to end.
"""

from foldserve.contract.adaptation import adapted_properties, read_adaptation
from foldserve.contract.config import CONFIG_FILE, ModelConfig, parse_config
from foldserve.contract.fields import ContractError
from foldserve.contract.metadata import (
    FORMAT_VERSION,
    INPUT_DTYPE,
    INPUT_NAME,
    KEYS,
    LOGITS,
    OUTPUT_NAMES,
    PROBABILITIES,
    ModelMetadata,
    fold_properties,
    from_properties,
    has_legacy_calibration,
    has_metadata,
    parse_shift_reference,
    read_fold_properties,
    read_shift_reference,
    shift_reference_properties,
    to_properties,
)
from foldserve.contract.records import (
    BACKWARD,
    DIRECTIONS,
    FORWARD,
    Adaptation,
    BNStats,
    FoldedLayer,
    FoldReport,
    LeftLayer,
)
from foldserve.contract.reference import ShiftReference, SummaryGroup
from foldserve.contract.shift import (
    BN_INPUT,
    BN_OUTPUT,
    MODEL_INPUT,
    MODEL_OUTPUT,
    RESIDUAL,
    SHIFT_REFERENCE_FILE,
    SOURCE_INPUT,
    SOURCE_PROBABILITIES,
    SOURCE_TAPS,
    SOURCES,
    TAP_PREFIX,
    TAPS,
    Tap,
    tap_name,
)

__all__ = [
    "BACKWARD",
    "BN_INPUT",
    "BN_OUTPUT",
    "CONFIG_FILE",
    "DIRECTIONS",
    "FORMAT_VERSION",
    "FORWARD",
    "INPUT_DTYPE",
    "INPUT_NAME",
    "KEYS",
    "LOGITS",
    "MODEL_INPUT",
    "MODEL_OUTPUT",
    "OUTPUT_NAMES",
    "PROBABILITIES",
    "RESIDUAL",
    "SHIFT_REFERENCE_FILE",
    "SOURCES",
    "SOURCE_INPUT",
    "SOURCE_PROBABILITIES",
    "SOURCE_TAPS",
    "TAPS",
    "TAP_PREFIX",
    "Adaptation",
    "BNStats",
    "ContractError",
    "FoldReport",
    "FoldedLayer",
    "LeftLayer",
    "ModelConfig",
    "ModelMetadata",
    "ShiftReference",
    "SummaryGroup",
    "Tap",
    "adapted_properties",
    "fold_properties",
    "from_properties",
    "has_legacy_calibration",
    "has_metadata",
    "parse_config",
    "parse_shift_reference",
    "read_adaptation",
    "read_fold_properties",
    "read_shift_reference",
    "shift_reference_properties",
    "tap_name",
    "to_properties",
]
