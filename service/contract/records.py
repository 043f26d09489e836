"""The typed records a model file carries: folded BatchNorm statistics and the fold report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from foldserve.contract import fields
from foldserve.contract.fields import ContractError

BACKWARD = "backward"  # the BN followed its producer and folded into it
FORWARD = "forward"  # the BN preceded its consumer and folded into it
DIRECTIONS = (BACKWARD, FORWARD)


@dataclass(frozen=True)
class BNStats:
    """One folded BatchNorm and the statistics it carried: the training distribution of its
    input, which the shift monitor compares live traffic against.

    Attributes:
        layer: the BN's name (a torch module's path, or an ONNX node's name).
        folded_into: the Linear/Conv it folded into.
        direction: `backward` (the BN followed its producer) or `forward` (the BN preceded its
            consumer: the input BN, or a BN after an activation).
        mean: the running mean, one value per channel (`num_features` of them in the JSON).
        var: the running variance, per channel.
        gamma: the BN's scale, per channel.
        beta: the BN's shift, per channel.
        eps: the BN's epsilon.
        reads_model_input: a BN over the raw model input: its statistics describe the very
            features the server receives.
    """

    layer: str
    folded_into: str
    direction: str
    mean: tuple[float, ...]
    var: tuple[float, ...]
    gamma: tuple[float, ...]
    beta: tuple[float, ...]
    eps: float
    reads_model_input: bool = False

    @property
    def num_features(self) -> int:
        return len(self.mean)

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "folded_into": self.folded_into,
            "direction": self.direction,
            "num_features": self.num_features,
            "mean": list(self.mean),
            "var": list(self.var),
            "gamma": list(self.gamma),
            "beta": list(self.beta),
            "eps": self.eps,
            "reads_model_input": self.reads_model_input,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> BNStats:
        entry = fields.json_object(value, where)
        mean = fields.numbers(entry, "mean", where)
        stats = cls(
            layer=fields.text(entry, "layer", where),
            folded_into=fields.text(entry, "folded_into", where),
            direction=fields.choice(entry, "direction", DIRECTIONS, where),
            mean=mean,
            var=fields.numbers(entry, "var", where, len(mean), minimum=0.0),
            gamma=fields.numbers(entry, "gamma", where, len(mean)),
            beta=fields.numbers(entry, "beta", where, len(mean)),
            eps=fields.number(entry, "eps", where, minimum=0.0),
            reads_model_input=fields.flag(entry, "reads_model_input", where),
        )
        declared = entry.get("num_features", stats.num_features)
        if declared != stats.num_features:
            raise fields.ContractError(
                f"{where}.num_features: {declared!r}, but mean has {stats.num_features} values"
            )
        return stats


@dataclass(frozen=True)
class FoldedLayer:
    """A BN that was folded: into which layer, and in which direction."""

    layer: str
    folded_into: str
    direction: str


@dataclass(frozen=True)
class LeftLayer:
    """A BN left in the graph, and why folding it would not have been exact."""

    layer: str
    reason: str


@dataclass(frozen=True)
class FoldReport:
    """What folded into what, and what was left and why.

    Attributes:
        folded: one `{layer, folded_into, direction}` per folded BN (files of foldserve 0.1.0
            spell `layer` and `folded_into` as `bn` and `into`; they still load).
        left: one `{layer, reason}` per BN left in the graph, with why folding it would not be
            exact in either direction.
    """

    folded: tuple[FoldedLayer, ...] = ()
    left: tuple[LeftLayer, ...] = ()

    @classmethod
    def of(cls, bn_stats: Sequence[BNStats], left: Sequence[LeftLayer] = ()) -> FoldReport:
        """The report of a fold that folded `bn_stats` and left `left`."""
        folded = tuple(FoldedLayer(s.layer, s.folded_into, s.direction) for s in bn_stats)
        return cls(folded, tuple(left))

    def to_json(self) -> dict[str, list[dict[str, str]]]:
        return {
            "folded": [
                {"layer": f.layer, "folded_into": f.folded_into, "direction": f.direction}
                for f in self.folded
            ],
            "left": [{"layer": x.layer, "reason": x.reason} for x in self.left],
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> FoldReport:
        report = fields.json_object(value, where)
        folded = [
            FoldedLayer(
                fields.text(item, "layer", w),
                fields.text(item, "folded_into", w),
                fields.choice(item, "direction", DIRECTIONS, w),
            )
            for w, item in fields.items(report, "folded", where)
        ]
        left = [
            LeftLayer(fields.text(item, "layer", w), fields.text(item, "reason", w))
            for w, item in fields.items(report, "left", where)
        ]
        return cls(tuple(folded), tuple(left))


@dataclass(frozen=True)
class Adaptation:
    """Where an adapted model came from and how it differs from it on its sample.

    Attributes:
        source_sha256: the SHA-256 of the model file it was adapted from.
        source_version: that file's model version ("" when it records none).
        examples: how many unlabeled examples the statistics were re-estimated on.
        data: what they were (a file name, "reservoir of model M version V", ...).
        created: when (ISO-8601 UTC).
        layers: the BN layers re-estimated, in the order they were (input side first).
        agreement: the fraction of the sample on which the adapted and the source model
            predict the same class.
        entropy_source, entropy_adapted: the mean entropy (nats) of each model's predicted
            class distribution on the sample.
    """

    source_sha256: str
    source_version: str
    examples: int
    data: str
    created: str
    layers: tuple[str, ...]
    agreement: float
    entropy_source: float
    entropy_adapted: float

    def to_json(self) -> dict[str, Any]:
        return {
            "source_sha256": self.source_sha256,
            "source_version": self.source_version,
            "examples": self.examples,
            "data": self.data,
            "created": self.created,
            "layers": list(self.layers),
            "agreement": self.agreement,
            "entropy_source": self.entropy_source,
            "entropy_adapted": self.entropy_adapted,
        }

    @classmethod
    def from_json(cls, value: Any, where: str) -> Adaptation:
        entry = fields.json_object(value, where)
        examples = fields.get(entry, "examples", where)
        if type(examples) is not int or examples < 1:
            raise ContractError(f"{where}.examples: expected a positive integer, got {examples!r}")
        layers = fields.get(entry, "layers", where)
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ContractError(f"{where}.layers: expected a list of layer names")
        return cls(
            source_sha256=fields.text(entry, "source_sha256", where),
            source_version=fields.text(entry, "source_version", where),
            examples=examples,
            data=fields.text(entry, "data", where),
            created=fields.text(entry, "created", where),
            layers=tuple(layers),
            agreement=fields.number(entry, "agreement", where, minimum=0.0),
            entropy_source=fields.number(entry, "entropy_source", where, minimum=0.0),
            entropy_adapted=fields.number(entry, "entropy_adapted", where, minimum=0.0),
        )
