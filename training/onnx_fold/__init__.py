"""Fold BatchNormalization into neighbouring layers of any ONNX graph, without torch.

`foldserve fold IN.onnx OUT.onnx` (`cli`) or `fold_file` in Python. One concept per module:

- `graph`: questions about the graph (producers, readers, constants, ranks);
- `constants`: values computed from constants alone, evaluated (onnx's numpy reference runtime);
- `rules`: when a fold is exact (a `Plan`), and the reason when it is not;
- `arithmetic`: the maths, in float64 numpy (the torch fold's, without torch);
- `rewrite`: one fold carried out on the model, keeping names;
- `fold`: the pass over a model (`fold_model`) and a file (`fold_file`);
- `verify`: the folded graph against the input graph in onnxruntime;
- `report`: what a fold returns (`FoldResult`) and prints (`format_report`), its errors.
"""

from foldserve.training.onnx_fold.fold import fold_file, fold_model, load_checked
from foldserve.training.onnx_fold.report import (
    FoldResult,
    NothingToFold,
    OnnxFoldError,
    Verification,
    format_report,
)
from foldserve.training.onnx_fold.verify import verify

__all__ = [
    "FoldResult",
    "NothingToFold",
    "OnnxFoldError",
    "Verification",
    "fold_file",
    "fold_model",
    "format_report",
    "load_checked",
    "verify",
]
