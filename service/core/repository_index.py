"""A model repository's index (RepositoryIndex): every model and version with its state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from foldserve.core.loaded import LoadedVersion
from foldserve.core.repository_settings import READY, UNAVAILABLE
from foldserve.core.types import IndexEntry

if TYPE_CHECKING:
    from foldserve.core.versions import ModelVersions


def entries(
    models: Iterable[ModelVersions],
    failed: dict[str, str],
    present: list[str],
    ready_only: bool,
) -> list[IndexEntry]:
    """Every model and version with its state: loaded versions READY, refused versions and
    models that failed to load (`failed`, with the reason) UNAVAILABLE (`ready_only`: READY
    only); the models of a directory (`present`) not loaded (explicit mode) with no version."""
    models = list(models)
    found: list[IndexEntry] = []
    for versions in models:
        refused = {r.version: r.reason for r in versions.refused}
        for loaded in versions.versions:
            found.append(IndexEntry(versions.name, loaded.version, READY, _still(
                refused.pop(loaded.version, ""), versions.config_problem
            ) or _candidate_note(versions, loaded)))  # fmt: skip
        if not ready_only:
            found += [
                IndexEntry(versions.name, version, UNAVAILABLE, reason)
                for version, reason in refused.items()
            ]
    if ready_only:
        return found
    found += [IndexEntry(n, "", UNAVAILABLE, r) for n, r in sorted(failed.items())]
    loaded = {m.name for m in models} | set(failed)
    found += [IndexEntry(n, "", "", "") for n in present if n not in loaded]
    return found


def _candidate_note(versions: ModelVersions, loaded: LoadedVersion) -> str:
    """What the index says of a candidate version ("" for another)."""
    record = loaded.model.adaptation
    if loaded is not versions.candidate.loaded or record is None:
        return ""
    return (
        f"candidate, not the default: adapted on {record.data}; agreement with its source "
        f"{record.agreement:.3f}, entropy {record.entropy_source:.3f} -> "
        f"{record.entropy_adapted:.3f} nats"
    )


def _still(refused: str, config: str) -> str:
    """Why a version READY serves as it was loaded: its new file or the model's config.pbtxt is
    refused ("": neither)."""
    if refused:
        return f"serving the copy loaded before; its file changed and is refused: {refused}"
    if config:
        return f"serving as loaded before; the changed config.pbtxt is refused: {config}"
    return ""
