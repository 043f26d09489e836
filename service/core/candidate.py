"""A model's candidate version: a model adapted to recent traffic (`core.adapt`), served beside
the model's versions but never as its default.

Clients reach it by naming its version. It is not in the repository until an operator promotes
it: promotion writes it there as a new version directory (`<dir>/<version>/model.onnx`), which
the model then loads like any other: the newest, so the default from then on, and still there
after a restart. Discarding it (or a new candidate, or a version of its number turning up in
the repository) drops it. A model has at most one candidate.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from foldserve.contract import CONFIG_FILE, Adaptation
from foldserve.core.errors import RequestError, Status
from foldserve.core.loaded import LoadedVersion
from foldserve.core.loading import load_model
from foldserve.core.metrics import Metrics
from foldserve.core.model import ModelError
from foldserve.core.runner import ModelRunner
from foldserve.core.shift.settings import ShiftSettings

log = logging.getLogger(__name__)
# Beside a candidate's file: its monitor's class-test thresholds, worked out by whoever built it.
THRESHOLDS_FILE = "lattice-thresholds.json"


@dataclass(frozen=True)
class CandidateContext:
    """What a model's candidate needs from the model: its name, source and settings."""

    name: str
    source: Path
    metrics: Metrics
    shift: ShiftSettings


class CandidateSlot:
    """The one candidate version of a model (empty: none)."""

    def __init__(self, context: CandidateContext) -> None:
        self._context = context
        self.loaded: LoadedVersion | None = None

    @property
    def adaptation(self) -> Adaptation | None:
        """What the candidate was adapted on, and how it compares with its source."""
        loaded = self.loaded
        return None if loaded is None else loaded.model.adaptation

    def add(self, version: str, path: Path, triton=None, reservoir_for=None) -> LoadedVersion:
        """Serve the adapted model file at `path` as candidate `version`, replacing any.

        Args:
            triton: the model directory's config.pbtxt, applied as to every version.
            reservoir_for: the model's reservoir for a loaded model (`ModelVersions`).

        Raises:
            RequestError: INVALID_ARGUMENT when the file does not load (the reason).
        """
        context = self._context
        try:
            model = load_model(path, context.name, version, monitor=context.shift.enabled,
                               triton=triton)  # fmt: skip
        except ModelError as exc:
            raise RequestError(Status.INVALID_ARGUMENT, f"candidate: {exc}") from None
        self.drop()  # first: the new candidate may take its version's series
        metrics = context.metrics.for_version(
            context.name,
            version,
            sha256=model.sha256,
            opset=model.opset,
            foldserve_version=model.foldserve_version,
            class_labels=model.class_labels,
        )
        reservoir = reservoir_for(model) if reservoir_for is not None else None
        runner = ModelRunner(model, metrics, context.shift, reservoir)
        self.loaded = LoadedVersion(version, model, runner, ())
        context.metrics.adapt.show_candidate(context.name, version, model.adaptation)
        log.info(
            "model %s: candidate version %s from %s",
            context.name,
            version,
            path,
            extra={"model": context.name, "model_version": version, "path": str(path)},
        )
        return self.loaded

    def drop(self, successor: LoadedVersion | None = None) -> None:
        """Stop serving the candidate; `successor`: the repository version that took its number
        (its series are that version's now)."""
        loaded, self.loaded = self.loaded, None
        if loaded is None:
            return
        context = self._context
        context.metrics.adapt.hide_candidate(context.name, loaded.version, loaded.model.adaptation)
        if successor is None:
            loaded.runner.metrics.remove()
            log.info("model %s: candidate version %s dropped", context.name, loaded.version)
        elif successor.model.sha256 != loaded.model.sha256:
            loaded.runner.metrics.remove_info()

    def after_refresh(self, versions: tuple[LoadedVersion, ...]) -> None:
        """A version of the candidate's number in the repository replaces it."""
        loaded = self.loaded
        if loaded is None:
            return
        successor = next((v for v in versions if v.version == loaded.version), None)
        if successor is not None:
            self.drop(successor)

    def write_into(self, filename: str) -> Path:
        """Write the candidate into the model's directory as version directory `<version>`
        (its model file named `filename`, with the config.json beside it), unless that
        directory already holds the same file (another worker wrote it).

        Raises:
            RequestError: FAILED_PRECONDITION with no candidate, for a model served from one
                file, or when the version directory exists with another file.
        """
        loaded, source = self.require(), self._context.source
        if not source.is_dir():
            raise RequestError(
                Status.FAILED_PRECONDITION,
                f"parameters.candidate: promote writes the candidate into the model's directory "
                f"of versions; model {self._context.name!r} is served from one file ({source}): "
                f"copy {loaded.model.path} into a version directory yourself",
            )
        target = source / loaded.version
        if target.exists():
            if _sha256(target / filename) != loaded.model.sha256:
                raise RequestError(
                    Status.FAILED_PRECONDITION,
                    f"parameters.candidate: {target} exists and holds another model",
                )
            return target
        staging = source / f".candidate-{loaded.version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shutil.copyfile(loaded.model.path, staging / filename)
        config = Path(loaded.model.path).with_name(CONFIG_FILE)
        if config.exists():
            shutil.copyfile(config, staging / CONFIG_FILE)
        try:
            staging.rename(target)
        except OSError:  # another worker renamed its copy there first
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def require(self) -> LoadedVersion:
        if self.loaded is None:
            raise RequestError(
                Status.FAILED_PRECONDITION,
                f"parameters.candidate: model {self._context.name!r} has no candidate version",
            )
        return self.loaded


def next_version(versions: list[str], adapted: str) -> str:
    """The version a new candidate is served as: after the highest of numbered `versions` (a
    repository's version directories), else the version its file records (`adapted`)."""
    if versions and all(v.isdigit() for v in versions):
        return str(max(int(v) for v in versions) + 1)
    return adapted


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
