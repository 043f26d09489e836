"""A loaded model version, ready to run, and a version that could not be loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

from foldserve.core.model import Model
from foldserve.core.repository_scan import Fingerprint
from foldserve.core.runner import ModelRunner
from foldserve.core.stats import InferStats


@dataclass(frozen=True)
class LoadedVersion:
    """A loaded, checked version, ready to run, and its inference statistics."""

    version: str
    model: Model
    runner: ModelRunner
    fingerprint: Fingerprint
    stats: InferStats = field(default_factory=InferStats, compare=False)


@dataclass(frozen=True)
class Refusal:
    """A version that could not be loaded, and why."""

    version: str
    reason: str
    fingerprint: Fingerprint
