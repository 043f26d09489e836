"""Fold eval-mode BatchNorm layers into neighbouring Linear/Conv weights.

- `graph_pass`: trace with torch.fx, fold what folds, rewire the graph (`fold_batchnorm`);
- `rules`: when a fold would be exact, and the reason when it would not;
- `layers`: one BN into one layer (`fold_bn_into_producer`, `fold_bn_into_consumer`);
- `arithmetic`: the pure tensor maths, in float64;
- `report`: what a fold returns (`FoldResult`), in the model-file contract's records.
"""

from foldserve.contract import BNStats, FoldReport, LeftLayer
from foldserve.training.fold.graph_pass import fold_batchnorm
from foldserve.training.fold.layers import fold_bn_into_consumer, fold_bn_into_producer
from foldserve.training.fold.report import FoldError, FoldResult

__all__ = [
    "BNStats",
    "FoldError",
    "FoldReport",
    "FoldResult",
    "LeftLayer",
    "fold_batchnorm",
    "fold_bn_into_consumer",
    "fold_bn_into_producer",
]
