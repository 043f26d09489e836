"""The versions of one served model, reloaded without a restart.

A model's source is one model file, or a directory of numbered versions
(`<dir>/<version>/model.onnx`, the layout Triton and TF Serving use). The newest valid versions
(up to `keep`) are loaded; the newest of them answers requests that name no version. `refresh`
(on a timer, or at once on SIGHUP) loads and checks new versions off the request path, then swaps
the set in one assignment: a call in flight keeps the version it started with, and no call ever
sees a half-loaded model. A version that fails to load is refused — logged, counted, listed with
its reason — and the versions already serving keep serving, one whose file turned bad included
(the copy loaded before answers, as Triton keeps a model whose reload fails); it is tried again
once its file or its `config.json` changes (a model copied in slowly loads once it is whole).

A model directory may hold Triton's `config.pbtxt` (`triton_config`): its version policy then
chooses the versions instead of `keep`, its `default_model_filename` names the file in each
version directory, and it applies to every version (`interface`); a change to it (or to its
label files) loads every version again. A bad one refuses the model at start; later, it is
logged once, named by `config_problem`, and the loaded versions keep serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from foldserve.contract.layout import MODEL_FILE
from foldserve.core.adapt.reservoir import Reservoir, reservoir_for
from foldserve.core.candidate import CandidateContext, CandidateSlot
from foldserve.core.errors import not_found
from foldserve.core.loaded import LoadedVersion, Refusal
from foldserve.core.loading import load_model
from foldserve.core.metrics import Metrics
from foldserve.core.model import Model, ModelError
from foldserve.core.repository_scan import Candidate, scan
from foldserve.core.runner import ModelRunner
from foldserve.core.shift.settings import ShiftSettings
from foldserve.core.triton_config import ConfigWatch, TritonConfig, layout, version_policy

log = logging.getLogger(__name__)


class ModelVersions:
    """The versions of one served model, and how requests find theirs.

    Args:
        source: a model file, or a directory of numbered version directories.
        name: the name the model is served under.
        metrics: the server's metric families (its own series are made from them).
        keep: how many of the newest valid versions stay loaded (and addressable).
        shift: the shift monitor's settings, for every version.
        reservoir: how many recent inputs to keep for adaptation (0: none, `--adapt-reservoir`).
    """

    def __init__(
        self,
        source: str | Path,
        name: str,
        metrics: Metrics,
        keep: int = 1,
        shift: ShiftSettings | None = None,
        reservoir: int = 0,
    ) -> None:
        self.source = Path(source)
        self._shift = shift or ShiftSettings()
        self._reservoir_size = reservoir
        self.reservoir: Reservoir | None = None  # made when an adaptable version loads
        self.candidate = CandidateSlot(CandidateContext(name, self.source, metrics, self._shift))
        self.name = name
        self._metrics = metrics
        self._series = metrics.for_model(name)
        self._keep = keep
        self._versions: tuple[LoadedVersion, ...] = ()
        self._refused: dict[str, Refusal] = {}
        self._refresh_lock = threading.Lock()
        self._quiet = False
        self._config_watch = ConfigWatch(self.source)
        self.config: TritonConfig | None = None  # the directory's config.pbtxt, if any
        self.config_problem = ""  # why a changed config.pbtxt is not applied ("": none)
        self.policy = version_policy(None, keep)  # which versions load

    @property
    def versions(self) -> tuple[LoadedVersion, ...]:
        """The loaded versions, newest first, then the candidate version, if any."""
        candidate = self.candidate.loaded
        return self._versions if candidate is None else (*self._versions, candidate)

    @property
    def latest(self) -> LoadedVersion:
        """The version that answers requests naming none."""
        return self._versions[0]

    @property
    def refused(self) -> tuple[Refusal, ...]:
        return tuple(self._refused.values())

    def start(self) -> None:
        """Load the first versions.

        Raises:
            ModelError: nothing in the repository can be served, or its config.pbtxt is bad (the
                reasons are in the message).
        """
        if not self.source.exists():
            raise ModelError(
                f"model {str(self.source)!r} does not exist (expected a model.onnx file or a "
                f"model repository directory, <dir>/<version>/{MODEL_FILE})"
            )
        self._config_watch.read()
        self._quiet = True  # the caller reports a failed start in one line of its own
        try:
            self.refresh()
        finally:
            self._quiet = False
        if self._versions:
            for refusal in self._refused.values():
                self._log_refusal(refusal)
        else:
            reasons = "; ".join(r.reason for r in self._refused.values())
            where = f"model repository {str(self.source)!r}"
            raise ModelError(
                reasons
                or f"{where} has no model (expected a model file, "
                f"{self.source}/<version>/{MODEL_FILE} or {self.source}/{MODEL_FILE})"
            )

    def resolve(self, version: str, version_field: str) -> LoadedVersion:
        """The version a request names (empty: the newest).

        Raises:
            RequestError: NOT_FOUND naming `version_field` (for a model with no loaded version
                left: its versions are being unloaded).
        """
        versions = self.versions
        if not versions:
            raise not_found(f"{version_field}: model {self.name!r} has no loaded version")
        served = versions[0] if not version else _find(versions, version)
        if served is None:
            loaded = [v.version for v in versions]
            raise not_found(
                f"{version_field}: unknown version {version!r} of model {self.name!r}; "
                f"the loaded versions are {loaded}"
            )
        return served

    def unload(self) -> None:
        """Unload every version (calls in flight keep the version they started with) and drop
        the model's series."""
        with self._refresh_lock:
            current = {v.version: v for v in self._versions}
            self._versions = ()
            self._swap((), current)
            self.candidate.drop()
            self._refused.clear()
            self._series.remove()

    def refresh(self) -> None:
        """Load what is new in the repository, then swap the served set in one step."""
        with self._refresh_lock:
            if not self._read_config():
                return
            current = {v.version: v for v in self._versions}
            wanted: list[LoadedVersion] = []
            candidates = scan(self.source, *layout(self.config))
            for candidate in candidates:
                if self.policy.full(len(wanted)):
                    break
                if not self.policy.allows(candidate.version):
                    continue
                loaded = self._load(candidate, current)
                if loaded is not None:
                    wanted.append(loaded)
            self._forget_refusals({c.key for c in candidates})
            if wanted:
                self._swap(tuple(wanted), current)
                self.candidate.after_refresh(self._versions)
            elif current:
                log.warning("model repository %s: no valid version; keeping", self.source)
            self._series.versions_loaded.set(len(self._versions))
            self._series.versions_refused.set(len(self._refused))

    def _read_config(self) -> bool:
        """Read the config.pbtxt again if it changed; False when it is bad (logged and counted
        once per change of the file)."""
        try:
            self.config, self.config_problem = self._config_watch.read(), ""
        except ModelError as exc:
            self.config_problem = str(exc)
            if self._config_watch.fresh:
                self._series.reload_failures.inc()
                log.error(
                    "model %s: %s; its loaded versions keep serving",
                    self.name,
                    exc,
                    extra={"model": self.name, "reason": str(exc)},
                )
            return False
        self.policy = version_policy(self.config, self._keep)
        return True

    def _load(
        self, candidate: Candidate, current: dict[str, LoadedVersion]
    ) -> LoadedVersion | None:
        found = (str(candidate.path.resolve()), candidate.fingerprint)
        for loaded in current.values():
            if (loaded.model.path, loaded.fingerprint) == found:
                if self._refused.pop(candidate.key, None):  # its file is back as it was loaded
                    log.info(
                        "model %s version %s: its file is good again", self.name, loaded.version
                    )
                return loaded
        refused = self._refused.get(candidate.key)
        kept = current.get(candidate.version or "")  # what serves while its new file is refused
        if refused is not None and refused.fingerprint == candidate.fingerprint:
            return kept
        try:
            model = load_model(
                candidate.path,
                self.name,
                candidate.version,
                monitor=self._shift.enabled,
                triton=self.config,
            )
        except ModelError as exc:
            self._refuse(candidate, str(exc))
            return kept
        self._accept(candidate.key)
        metrics = self._metrics.for_version(
            self.name,
            model.version,
            sha256=model.sha256,
            opset=model.opset,
            foldserve_version=model.foldserve_version,
            class_labels=model.class_labels,
        )
        log.info(
            "loaded model %s version %s from %s",
            self.name,
            model.version,
            model.path,
            extra={"model": self.name, "model_version": model.version, "path": model.path},
        )
        runner = ModelRunner(model, metrics, self._shift, self.reservoir_for(model))
        return LoadedVersion(model.version, model, runner, candidate.fingerprint)

    def add_candidate(self, version: str, path: Path) -> None:
        """Serve the adapted file at `path` as this model's candidate `version` (`candidate`)."""
        with self._refresh_lock:
            self.candidate.add(version, path, self.config, self.reservoir_for)

    def reservoir_for(self, model: Model) -> Reservoir | None:
        """The reservoir `model`'s inputs go to (None: the setting is off, or it cannot be
        adapted): the model's, made again for another example shape."""
        self.reservoir, kept = reservoir_for(self.reservoir, self._reservoir_size, model)
        return kept

    def _swap(self, wanted: tuple[LoadedVersion, ...], current: dict[str, LoadedVersion]) -> None:
        self._versions = wanted
        kept = {id(v) for v in wanted}
        for old in current.values():
            if id(old) in kept:
                continue
            # A file replaced under the same version shares that version's series.
            successor = next((v for v in wanted if v.version == old.version), None)
            if successor is None:
                old.runner.metrics.remove()
                log.info(
                    "unloaded model %s version %s",
                    self.name,
                    old.version,
                    extra={"model": self.name, "model_version": old.version},
                )
            elif successor.model.sha256 != old.model.sha256:
                old.runner.metrics.remove_info()

    def _refuse(self, candidate: Candidate, reason: str) -> None:
        refusal = Refusal(candidate.key, reason, candidate.fingerprint)
        self._refused[candidate.key] = refusal
        self._series.reload_failures.inc()
        if not self._quiet:
            self._log_refusal(refusal)

    def _log_refusal(self, refusal: Refusal) -> None:
        name, version, reason = self.name, refusal.version, refusal.reason
        extra = {"model": name, "model_version": version, "reason": reason}
        log.error("model %s version %s refused: %s", name, version, reason, extra=extra)

    def _accept(self, key: str) -> None:
        self._refused.pop(key, None)

    def _forget_refusals(self, present: set[str | None]) -> None:
        """A refused version that left the repository is no longer refused."""
        for key in [k for k in self._refused if k not in present]:
            self._accept(key)


def _find(versions: Sequence[LoadedVersion], version: str) -> LoadedVersion | None:
    return next((v for v in versions if v.version == version), None)
