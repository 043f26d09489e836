"""How the model repository loads models (`foldserve serve`'s model control settings), apart
from the repository so that reading them costs nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass, field

from foldserve.core.shift.settings import ShiftSettings

MODES = ("none", "poll", "explicit")
READY, UNAVAILABLE = "READY", "UNAVAILABLE"  # Triton's states in a repository index


@dataclass(frozen=True)
class RepositorySettings:
    """How the repository loads models.

    Attributes:
        keep: how many of the newest valid versions of each model stay loaded.
        shift: the shift monitor's settings, for every version of every model.
        mode: the model control mode (`MODES`).
        load: with `explicit`, the models to load at start.
        default: the model that answers requests naming none (None: the only model, if one).
        instances: how many server processes load each model (`--workers`): ModelConfig's
            instance count.
        reservoir: how many recent inputs each adaptable model keeps (0: none).
    """

    keep: int = 2
    shift: ShiftSettings = field(default_factory=ShiftSettings)
    mode: str = "none"
    load: tuple[str, ...] = ()
    default: str | None = None
    instances: int = 1
    reservoir: int = 0
