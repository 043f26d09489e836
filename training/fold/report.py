"""What a fold returns: the folded module and its report, in the contract's records."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx

from foldserve.contract import BNStats, FoldReport, LeftLayer


class FoldError(Exception):
    """The model cannot be folded into a network that serves one example at a time."""


@dataclass
class FoldResult:
    """A folded copy of a network, and what happened to each of its BatchNorm layers.

    Attributes:
        module: the folded copy, in eval mode; it holds no BatchNorm modules but those in `left`.
        bn_stats: one record per folded BN, with the statistics it carried (the shift monitor
            reads them), in folding order.
        left: the BNs left in place, each with the reason folding it would not be exact.
    """

    module: fx.GraphModule
    bn_stats: list[BNStats] = field(default_factory=list)
    left: list[LeftLayer] = field(default_factory=list)

    @property
    def report(self) -> FoldReport:
        """The fold report as the model file carries it: what folded into what, what was left."""
        return FoldReport.of(self.bn_stats, self.left)
