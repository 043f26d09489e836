"""The model repository: every served model, by name, each with its versions (`versions`).

Two sources. `--model PATH` serves one model: a model file, or a directory of numbered versions.
`--model-repository DIR` serves Triton's layout, `DIR/<model>/<version>/model.onnx`: every
directory of DIR is a model of that name. Which models load is the model control mode's
(Triton's modes):

- `none`: every model at start; new versions of loaded models are picked up, new models not;
- `poll`: models (and versions) appear and disappear with the directory;
- `explicit`: only the models named at start (`--load-model`) or loaded by a client
  (`load`/`unload`, RepositoryModelLoad/Unload).

One model's failure to load never affects another: it is listed with its reason
(`index`), and the others serve. The set of models changes in one assignment, so a call that
found its model keeps it even while it is unloaded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from foldserve.core.candidate_control import control_candidate
from foldserve.core.errors import ModelError, RequestError, Status, invalid, not_found
from foldserve.core.heap import release_freed_memory
from foldserve.core.metrics import Metrics
from foldserve.core.repository_index import entries
from foldserve.core.repository_settings import RepositorySettings
from foldserve.core.types import IndexEntry
from foldserve.core.versions import LoadedVersion, ModelVersions

log = logging.getLogger(__name__)


class Repository:
    """Every served model, by name.

    Args:
        metrics: the server's metric families.
        settings: how models load.
        model: one model to serve, (path, name): a file or a directory of versions.
        root: a directory of models (Triton's layout). Exactly one of `model` and `root`.
    """

    def __init__(
        self,
        metrics: Metrics,
        settings: RepositorySettings,
        *,
        model: tuple[Path, str] | None = None,
        root: Path | None = None,
    ) -> None:
        if (model is None) == (root is None):
            raise ValueError("a repository serves one model or a directory of models")
        self.metrics = metrics
        self.settings = settings
        self._single = model
        self.root = root
        self._models: dict[str, ModelVersions] = {}
        self._failed: dict[str, str] = {}
        self._lock = threading.RLock()

    # --- what is served ---------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The names of the models loaded now."""
        return sorted(self._models)

    def model(self, name: str | None = None) -> ModelVersions:
        """A loaded model by name (None: the default one).

        Raises:
            RequestError: NOT_FOUND for a model that is not loaded; INVALID_ARGUMENT for None
                when no default can be told.
        """
        return self._find(name or self.default_name("model_name"), "model_name")

    def resolve(self, name: str, version: str, fields: tuple[str, str]) -> LoadedVersion:
        """The version a request names (empty name: the default model; empty version: its
        newest).

        Raises:
            RequestError: NOT_FOUND naming the field; INVALID_ARGUMENT for an empty name when
                several models are served and none is the default.
        """
        name_field, version_field = fields
        found = self._find(name or self.default_name(name_field), name_field)
        return found.resolve(version, version_field)

    def default_name(self, field: str) -> str:
        """The model that answers requests naming none: the `default` setting, or the only one.

        Raises:
            RequestError: INVALID_ARGUMENT naming `field` when several models are served.
        """
        if self.settings.default:
            return self.settings.default
        names = self.names
        if len(names) == 1:
            return names[0]
        raise invalid(f"{field}: required: this server serves {len(names)} models, {names}")

    def _find(self, name: str, field: str) -> ModelVersions:
        found = self._models.get(name)
        if found is not None:
            return found
        if name in self._failed:
            raise RequestError(
                Status.NOT_FOUND, f"{field}: model {name!r} failed to load: {self._failed[name]}"
            )
        raise not_found(f"{field}: unknown model {name!r}; the models served are {self.names}")

    def __iter__(self) -> Iterator[ModelVersions]:
        return iter(list(self._models.values()))

    # --- loading and unloading ----------------------------------------------------------------

    def start(self) -> None:
        """Load the models the mode loads at start.

        Raises:
            ModelError: a single model that cannot be served (the reason), or a directory where
                no model loads (the reasons) outside the `explicit` mode.
        """
        if self._single is not None:
            path, name = self._single
            settings = self.settings
            versions = ModelVersions(
                path, name, self.metrics, settings.keep, settings.shift, settings.reservoir
            )
            versions.start()
            self._models = {name: versions}
            return
        if not self.root.is_dir():  # type: ignore[union-attr]
            raise ModelError(f"model repository {str(self.root)!r} is not a directory")
        explicit = self.settings.mode == "explicit"
        for name in self.settings.load if explicit else self.discover():
            self._load(name)
        if not self._models and not explicit:
            reasons = "; ".join(f"{n}: {r}" for n, r in self._failed.items())
            raise ModelError(reasons or f"model repository {str(self.root)!r} holds no model")

    def discover(self) -> list[str]:
        """The models of the repository directory: its directories, by name."""
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(
            child.name
            for child in self.root.iterdir()
            if child.is_dir() and not child.name.startswith(".")
        )

    def _load(self, name: str) -> None:
        """Load (or reload) one model of the directory; a failure is recorded, not raised."""
        versions = ModelVersions(
            self.root / name,
            name,
            self.metrics,
            self.settings.keep,
            self.settings.shift,  # type: ignore[operator]
            self.settings.reservoir,
        )
        try:
            versions.start()
        except ModelError as exc:
            self._failed[name] = str(exc)
            log.error("model %s refused: %s", name, exc, extra={"model": name, "reason": str(exc)})
            return
        with self._lock:
            self._failed.pop(name, None)
            old = self._models.get(name)
            self._models = {**self._models, name: versions}
        if old is not None:
            old.unload()

    def load(self, name: str) -> None:
        """Load a model of the directory, or load it again (`explicit` mode).

        Raises:
            RequestError: FAILED_PRECONDITION outside the `explicit` mode or for a single model;
                NOT_FOUND for a name the directory does not have; INVALID_ARGUMENT when it
                fails to load (the reason).
        """
        self.check_control("load")
        if name not in self.discover():
            raise not_found(
                f"model_name: no model {name!r} in the repository; it has {self.discover()}"
            )
        self._load(name)
        release_freed_memory()  # what a model loaded again replaced
        if name in self._failed:
            raise invalid(f"model_name: model {name!r} failed to load: {self._failed[name]}")

    def unload(self, name: str) -> None:
        """Unload a model (`explicit` mode); its calls in flight finish.

        Raises:
            RequestError: FAILED_PRECONDITION outside the `explicit` mode; NOT_FOUND for a model
                that is not loaded.
        """
        self.check_control("unload")
        with self._lock:
            versions = self._models.get(name)
            if versions is None:
                self._failed.pop(name, None)
                raise not_found(f"model_name: model {name!r} is not loaded")
            self._models = {k: v for k, v in self._models.items() if k != name}
        versions.unload()
        del versions
        release_freed_memory()
        log.info("unloaded model %s", name, extra={"model": name})

    def apply(self, action: str, name: str, detail: tuple[str, ...] = ()) -> None:
        """Apply a model control command in this process: `load`, `unload`, or one of a
        model's candidate version (`core.candidate_control.CANDIDATE_ACTIONS`)."""
        if action == "load":
            self.load(name)
        elif action == "unload":
            self.unload(name)
        else:
            control_candidate(self.model(name), action, detail)

    def check_control(self, action: str) -> None:
        """Raises RequestError FAILED_PRECONDITION when models cannot be loaded or unloaded."""
        if self._single is not None or self.settings.mode != "explicit":
            raise RequestError(
                Status.FAILED_PRECONDITION,
                f"model control: cannot {action} models in model control mode "
                f"{self.settings.mode!r}"
                + (" serving one model (--model)" if self._single else "")
                + "; serve a directory with --model-repository DIR --model-control-mode explicit",
            )

    def refresh(self) -> None:
        """Pick up new versions of every loaded model; in `poll` mode, new and removed models."""
        self._refresh()
        # The versions unloaded are freed by now (unless calls still hold them).
        release_freed_memory()

    def _refresh(self) -> None:
        for versions in self:
            versions.refresh()
        if self._single is not None or self.settings.mode != "poll":
            return
        present = set(self.discover())
        for name in sorted(present - set(self._models) - set(self._failed)):
            self._load(name)
        for name in sorted(set(self._failed) - present):
            self._failed.pop(name, None)
        for name in sorted(set(self._models) - present):
            with self._lock:
                versions = self._models.pop(name)
                self._models = dict(self._models)
            versions.unload()
            log.info("unloaded model %s (gone from the repository)", name, extra={"model": name})

    # --- the index ----------------------------------------------------------------------------

    def index(self, ready_only: bool) -> list[IndexEntry]:
        """Every model and version with its state (`repository_index.entries`)."""
        return entries(self, self._failed, self.discover(), ready_only)
