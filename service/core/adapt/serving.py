"""Adaptation inside the server (`--adapt-reservoir N`): candidate versions built from each
model's reservoir of recent inputs, on an operator's request or on a shift alarm.

A build runs off the request path (a model control call's thread, or the watcher's): it adapts
the model's default version on a copy of the reservoir (`adapt_model`, in a child process at the
lowest CPU priority: `child`), writes the file to the server's candidate folder, laid out as a
repository (`<folder>/<model>/<version>/model.onnx`), and hands it to model control, which
serves it as the model's candidate in every worker. One build at a time per model across the
workers (a lock file in the folder).

On an alarm of the default version's shift monitor, the watcher waits until the reservoir holds
only inputs that arrived after the alarm began (`capacity` of this process's examples since
then; with several workers, its share of the monitor's examples), then builds: once per alarm,
and only when the model has no candidate adapted from that version already.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from foldserve.contract import CONFIG_FILE, KEYS
from foldserve.contract.config import NAME, VERSION
from foldserve.contract.layout import MODEL_FILE
from foldserve.core.adapt.adapt import MIN_EXAMPLES
from foldserve.core.adapt.check import AdaptError
from foldserve.core.adapt.child import AdaptProcess
from foldserve.core.adapt.onnx_file import OnnxFile
from foldserve.core.candidate import THRESHOLDS_FILE, next_version
from foldserve.core.errors import RequestError, Status
from foldserve.core.folders import own_folder, shared_folder
from foldserve.core.model import ModelError
from foldserve.core.model_config import config_files
from foldserve.core.repository import Repository
from foldserve.core.repository_scan import scan
from foldserve.core.shift.cusum import lattice_thresholds_json
from foldserve.core.triton_config import layout
from foldserve.core.versions import ModelVersions

log = logging.getLogger(__name__)
WATCH_SECONDS = 0.5
# Names the folder every worker of a server writes candidates to (the supervisor makes it).
CANDIDATE_DIR_ENV = "FOLDSERVE_CANDIDATE_DIR"
CANDIDATE_PREFIX = "foldserve-candidates-"
Control = Callable[[str, str, tuple[str, ...]], None]


class CandidateBuilder:
    """Builds candidate versions from the models' reservoirs.

    Args:
        repository: the served models (their reservoirs, default versions and monitors).
        control: model control, (action, model name, detail): applies a command in every worker.
        folder: where candidate files are written (shared by the workers); called at the first
            build (a server that builds none makes no folder).
        on_alarm: build on the default version's shift alarms (`watch`).
    """

    def __init__(
        self,
        repository: Repository,
        control: Control,
        folder: Callable[[], Path],
        on_alarm: bool,
    ) -> None:
        self._repository = repository
        self._control = control
        self._folder_of = folder
        self._made: Path | None = None
        self._folder_lock = threading.Lock()
        self._on_alarm = on_alarm
        self._answered: set[tuple[str, str, int]] = set()  # (model, sha256, alarm's example)
        self._stop = threading.Event()
        self._process = AdaptProcess()

    def build(self, name: str, trigger: str = "request", wait: bool = True) -> str | None:
        """Build a candidate of model `name` from its reservoir and serve it; its version.
        `wait`: False returns None at once when another build of the model is running.

        Raises:
            RequestError: NOT_FOUND for a model not served; FAILED_PRECONDITION when the
                reservoir is off or too small, or the model cannot be adapted (the reason).
        """
        versions = self._repository.model(name)
        reservoir = versions.reservoir
        if reservoir is None:
            raise _refused(f"model {name!r} keeps no inputs (serve with --adapt-reservoir N; a "
                           "classifier whose file records its folded BatchNorms)")  # fmt: skip
        if len(reservoir) < MIN_EXAMPLES:
            raise _refused(f"model {name!r} has kept {len(reservoir)} input(s); adaptation needs "
                           f"at least {MIN_EXAMPLES}")  # fmt: skip
        with self._building(name, wait) as building:
            if not building:
                return None
            return self._build(versions, trigger)

    def _build(self, versions: ModelVersions, trigger: str) -> str:
        adapt = self._repository.metrics.adapt
        serving, sample = versions.latest, versions.reservoir.sample()  # type: ignore[union-attr]
        started = time.perf_counter()
        data = f"{len(sample)} recent inputs of version {serving.version} (server reservoir)"
        try:
            adapted, record, thresholds = self._process.adapt(
                serving.model.path, versions.name, serving.version, sample, data,
                self._repository.settings.shift,
            )  # fmt: skip
            if record.source_sha256 != serving.model.sha256:
                raise AdaptError(f"{serving.model.path}: the file changed since it was loaded")
        except (AdaptError, ModelError, RequestError) as exc:
            adapt.builds.labels(versions.name, trigger, "failed").inc()
            raise exc if isinstance(exc, RequestError) else _refused(str(exc)) from None
        taken = [c.version for c in scan(versions.source, *layout(versions.config)) if c.version]
        loaded = [v.version for v in versions.versions]
        version = next_version([*taken, *loaded], _recorded_version(adapted, serving))
        path = self._write(versions, version, adapted, Path(serving.model.path))
        # Every worker's model control reads them there: the candidate's monitor loads without
        # the dense solves.
        (path.parent / THRESHOLDS_FILE).write_text(lattice_thresholds_json(thresholds))
        self._control("candidate", versions.name, (version, str(path)))
        adapt.builds.labels(versions.name, trigger, "built").inc()
        adapt.build_duration.labels(versions.name).observe(time.perf_counter() - started)
        log.info(
            "model %s: candidate version %s adapted from version %s on %d inputs (%s); "
            "agreement %.3f, entropy %.3f -> %.3f nats",
            versions.name, version, serving.version, len(sample), trigger,
            record.agreement, record.entropy_source, record.entropy_adapted,
        )  # fmt: skip
        return version

    @property
    def _folder(self) -> Path:
        with self._folder_lock:
            if self._made is None:
                self._made = self._folder_of()
            return self._made

    def _write(self, versions: ModelVersions, version: str, data: bytes, source: Path) -> Path:
        """The candidate file, and one config.json with the source's settings (its own over its
        model directory's, without the name and version the candidate is served under)."""
        folder = self._folder / versions.name / version
        folder.mkdir(parents=True, exist_ok=True)
        config: dict = {}
        for file in reversed(config_files(source, in_repository=versions.source.is_dir())):
            if file.is_file():
                config.update(json.loads(file.read_text()))
        for key in (NAME, VERSION):
            config.pop(key, None)
        if config:
            (folder / CONFIG_FILE).write_text(json.dumps(config))
        (folder / MODEL_FILE).write_bytes(data)
        return folder / MODEL_FILE

    @contextmanager
    def _building(self, name: str, wait: bool) -> Iterator[bool]:
        self._folder.mkdir(parents=True, exist_ok=True)
        with open(self._folder / f".{name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # --- on shift alarms ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the adaptation process; watch the reservoirs (their metrics) and, with
        `on_alarm`, the alarms."""
        self._process.start()
        threading.Thread(target=self._watch, name="adapt-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._process.stop()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            for versions in self._repository:
                try:
                    self.look(versions)
                except Exception:  # one model's failure must not stop the watch
                    log.exception("model %s: adapting on a shift alarm failed", versions.name)

    def look(self, versions: ModelVersions) -> None:
        """Publish the model's reservoir; on an alarm, build once the reservoir is fresh."""
        reservoir = versions.reservoir
        if reservoir is None or not versions.versions:
            return
        self._repository.metrics.adapt.show_reservoir(versions.name, len(reservoir),
                                                      reservoir.nbytes)  # fmt: skip
        serving = versions.latest
        monitor = serving.runner.monitor
        if not self._on_alarm or monitor is None:
            return
        shot = monitor.snapshot()
        began = min((s for s in shot.summary_since if s > 0), default=0)
        if not shot.alarm or not began:
            return
        adaptation = versions.candidate.adaptation
        if adaptation is not None and adaptation.source_sha256 == serving.model.sha256:
            return  # this alarm, or an earlier one, has its candidate
        key = (versions.name, serving.model.sha256, began)
        # This process's inputs since the alarm began: its share of every process's.
        share = shot.contributors.get(os.getpid(), shot.examples) / max(shot.examples, 1)
        if key in self._answered or (shot.examples - began) * share < reservoir.capacity:
            return
        self._answered.add(key)  # once per alarm, whatever the outcome
        try:
            self.build(versions.name, "alarm", wait=False)
        except RequestError as exc:
            log.warning("model %s: no candidate on its shift alarm: %s", versions.name, exc)


def candidate_folder() -> Path:
    """Where this server writes candidate files: its supervisor's folder, or one of its own."""
    return Path(own_folder(CANDIDATE_DIR_ENV, CANDIDATE_PREFIX))


def shared_candidate_folder():
    """The supervisor's side: the folder its workers write candidates to (`shared_folder`)."""
    return shared_folder(CANDIDATE_DIR_ENV, CANDIDATE_PREFIX)


def _recorded_version(data: bytes, serving) -> str:
    """The version the adapted file records (for a model served from one file)."""
    return OnnxFile(data).properties().get(KEYS["model_version"]) or f"{serving.version}-adapted"


def _refused(message: str) -> RequestError:
    return RequestError(Status.FAILED_PRECONDITION, f"parameters.candidate: {message}")
