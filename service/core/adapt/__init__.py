"""Answer a covariate shift: re-estimate a folded model's BN statistics on unlabeled inputs.

`adapt_model` (`adapt`) in Python; `foldserve adapt` (`foldserve.adapt_cli`) on the command
line. One concept per module:

- `onnx_file`: the parts of an ONNX file adaptation reads and rewrites, without `onnx`;
- `sites`: where each folded BN lives in the graph (its layer, weight, bias, tensor);
- `refold`: the maths, in float64 numpy: a BN as a per-channel map, and a change of its
  statistics folded into the weights;
- `estimate`: the layer-by-layer re-estimation;
- `check`: the re-fold against the source with explicit corrections, and the label-free
  comparison of the two models (agreement, entropy);
- `adapt`: the whole of it, and the new file's metadata.
"""

from foldserve.core.adapt.adapt import MIN_EXAMPLES, Adapted, adapt_model
from foldserve.core.adapt.check import AdaptError, Signals, mean_entropy

__all__ = ["MIN_EXAMPLES", "AdaptError", "Adapted", "Signals", "adapt_model", "mean_entropy"]
