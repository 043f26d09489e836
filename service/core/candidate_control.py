"""Model control of a model's candidate version (`core.candidate`): what a load's `candidate`
parameter asks, and the commands every worker applies."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

from foldserve.core.candidate import THRESHOLDS_FILE
from foldserve.core.errors import RequestError, Status
from foldserve.core.shift.cusum import lattice_thresholds_from_json, remember_lattice_thresholds
from foldserve.core.triton_config import layout
from foldserve.core.versions import ModelVersions

CANDIDATE_ACTIONS = ("candidate", "promote", "discard")  # model control's, in every worker
REQUESTS = ("adapt", "promote", "discard")  # what a load's `candidate` parameter asks


def candidate_action(parameters: Mapping[str, object]) -> str | None:
    """What a model control load's parameters ask of the model's candidate (None: a load).

    Raises:
        RequestError: INVALID_ARGUMENT for another parameter (foldserve implements none of
            Triton's load parameters) or value, naming it.
    """
    others = sorted(set(parameters) - {"candidate"})
    if others:
        raise RequestError(
            Status.INVALID_ARGUMENT,
            f"parameters: {others} not implemented by foldserve; a load takes only "
            f"'candidate' ({', '.join(REQUESTS)})",
        )
    if "candidate" not in parameters:
        return None
    asked = parameters["candidate"]
    if asked not in REQUESTS:
        raise RequestError(
            Status.INVALID_ARGUMENT,
            f"parameters.candidate: expected one of {', '.join(REQUESTS)} (a string); "
            f"got {asked!r}",
        )
    return str(asked)


def control_candidate(versions: ModelVersions, action: str, detail: tuple[str, ...]) -> None:
    """Apply a candidate command to a model, in this process (every worker applies it):
    `candidate` (detail: version, file) serves a new candidate, `promote` writes it into the
    repository and loads it, `discard` drops it.

    Raises:
        RequestError: FAILED_PRECONDITION with no candidate, for a model served from one file, or
            when the promoted version does not become the default; INVALID_ARGUMENT for a
            candidate file that does not load.
    """
    slot = versions.candidate
    if action == "candidate":
        version, path = detail
        _remember_thresholds(Path(path).parent / THRESHOLDS_FILE)
        versions.add_candidate(version, Path(path))
    elif action == "discard":
        slot.require()
        slot.drop()
    else:
        version = slot.require().version
        slot.write_into(layout(versions.config)[0])
        versions.refresh()
        if versions.latest.version != version:
            raise RequestError(
                Status.FAILED_PRECONDITION,
                f"parameters.candidate: version {version} of model {versions.name!r} was written "
                f"to {versions.source / version} but is not the default (the model's version "
                "policy does not load it)",
            )


def _remember_thresholds(file: Path) -> None:
    """Take the candidate's thresholds from its builder (none there: they are worked out)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        remember_lattice_thresholds(lattice_thresholds_from_json(file.read_text()))
