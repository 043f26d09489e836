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
- `Tap`, `ShiftCalibration` (`LayerCalibration`): the shift monitor's graph outputs and the
  thresholds a clean replay set at export (`foldserve.contract.shift` documents both);
- `ModelConfig`: the optional `config.json` next to a model file (`foldserve.contract.config`:
  its keys), read with `parse_config`.

Graph names are part of the contract too: the input `input` and the outputs `logits` and
`probabilities` (softmax of the logits), each `[batch, classes]`, and the optional taps
`tap.<layer>` (`tap_name`), each `[batch, 2 · channels]`, and `taps`, all of them end to end.
"""

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
    has_metadata,
    read_fold_properties,
    to_properties,
)
from foldserve.contract.records import (
    BACKWARD,
    DIRECTIONS,
    FORWARD,
    BNStats,
    FoldedLayer,
    FoldReport,
    LeftLayer,
)
from foldserve.contract.shift import (
    BN_INPUT,
    BN_OUTPUT,
    TAP_PREFIX,
    TAPS,
    LayerCalibration,
    ShiftCalibration,
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
    "OUTPUT_NAMES",
    "PROBABILITIES",
    "TAPS",
    "TAP_PREFIX",
    "BNStats",
    "ContractError",
    "FoldReport",
    "FoldedLayer",
    "LayerCalibration",
    "LeftLayer",
    "ModelConfig",
    "ModelMetadata",
    "ShiftCalibration",
    "Tap",
    "fold_properties",
    "from_properties",
    "has_metadata",
    "parse_config",
    "read_fold_properties",
    "tap_name",
    "to_properties",
]
