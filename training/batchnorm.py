"""Which modules foldserve treats as BatchNorm layers."""

from __future__ import annotations

from torch import nn

# The layers whose eval-mode forward is the per-channel affine map the fold computes. The fold
# matches them by exact type: a subclass may normalize differently, so it is left in place with
# its reason.
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
