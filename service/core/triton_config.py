"""Triton's `config.pbtxt` in a model's directory (`<dir>/config.pbtxt`): read, checked for what
applies to the whole model, and the version policy that chooses which versions load.

What applies to an ONNX model served on CPU: `name` (it must be the directory's), `platform` and
`backend` (ONNX Runtime's or none), `max_batch_size`, the inputs and outputs with `reshape` and
`label_filename` (checked against each version's graph: `interface`), `version_policy` and
`default_model_filename`. Everything else a Triton config may hold (dynamic batching,
optimization, warm-up, instance group details, parameters...) is named in one warning per
reading of the file and ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from foldserve._proto.inference.model_config_pb2 import ModelConfig, ModelVersionPolicy
from foldserve.contract.layout import MODEL_FILE, TRITON_CONFIG_FILE
from foldserve.core.errors import ModelError
from foldserve.core.pbtxt import PbtxtError, parse_model_config

log = logging.getLogger(__name__)

PLATFORM, BACKEND = "onnxruntime_onnx", "onnxruntime"  # Triton's names for ONNX Runtime
# Fields of our subset that foldserve reads but does not apply: it runs every model on CPU, one
# instance per worker process, with no backend parameters, and every input is required.
NOT_APPLIED = ("instance_group", "parameters", "runtime", "input.optional")


@dataclass(frozen=True)
class VersionPolicy:
    """Which version directories load: the newest `count` that load (`latest`), every one
    (`all`), or those listed (`specific`)."""

    kind: str
    count: int = 0
    versions: tuple[int, ...] = ()

    def allows(self, version: str | None) -> bool:
        """Whether a version directory (None: an unversioned file) may load."""
        if self.kind != "specific" or version is None:
            return True
        return int(version) in self.versions

    def full(self, loaded: int) -> bool:
        """Whether `loaded` versions are all this policy keeps."""
        return self.kind == "latest" and loaded >= self.count

    def message(self) -> ModelVersionPolicy:
        """The policy as Triton's `ModelVersionPolicy`."""
        if self.kind == "latest":
            return ModelVersionPolicy(latest=ModelVersionPolicy.Latest(num_versions=self.count))
        if self.kind == "all":
            return ModelVersionPolicy(all=ModelVersionPolicy.All())
        return ModelVersionPolicy(specific=ModelVersionPolicy.Specific(versions=self.versions))


@dataclass(frozen=True)
class TritonConfig:
    """A model directory's config.pbtxt, checked for what applies to the whole model.

    Attributes:
        file: where it was read.
        message: what it says, in our subset of Triton's `ModelConfig`.
        ignored: what it gives that foldserve does not apply (dotted paths).
    """

    file: Path
    message: ModelConfig
    ignored: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        """The model file in each version directory."""
        return self.message.default_model_filename or MODEL_FILE

    @property
    def label_files(self) -> tuple[Path, ...]:
        """The label files its outputs name, beside the config."""
        folder = self.file.parent
        return tuple(folder / o.label_filename for o in self.message.output if o.label_filename)


def version_policy(config: TritonConfig | None, keep: int) -> VersionPolicy:
    """A model's version policy: its config.pbtxt's, else the newest `keep` (`--keep-versions`)."""
    policy = config.message.version_policy if config is not None else ModelVersionPolicy()
    chosen = policy.WhichOneof("policy_choice")
    if chosen is None:
        return VersionPolicy("latest", keep)
    if chosen == "latest":
        return VersionPolicy("latest", policy.latest.num_versions)
    return VersionPolicy(chosen, versions=tuple(policy.specific.versions))


def layout(config: TritonConfig | None) -> tuple[str, tuple[Path, ...]]:
    """The model file's name in each version directory, and the files every version reads (the
    config.pbtxt and its label files)."""
    if config is None:
        return MODEL_FILE, ()
    return config.filename, (config.file, *config.label_files)


def read_triton_config(folder: Path) -> TritonConfig | None:
    """The config.pbtxt of a model directory (None: it has none), checked.

    Raises:
        ModelError: unreadable, not protobuf text, a name other than the directory's, a platform
            or backend other than ONNX Runtime's, or a bad batch size, version policy or file
            name; the message names the file and the key.
    """
    file = folder / TRITON_CONFIG_FILE
    if not file.is_file():
        return None
    where = f"config file {str(file)!r}"
    try:
        message, unknown = parse_model_config(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, PbtxtError) as exc:
        raise ModelError(f"{where} cannot be read: {exc}") from None
    _check(message, folder.name, where)
    present = {f.name for f, _ in message.ListFields()}
    given = [k for k in NOT_APPLIED if k in present]
    if any(i.optional for i in message.input):
        given.append("input.optional")
    ignored = tuple(dict.fromkeys((*unknown, *given)))
    if ignored:
        log.warning(
            "%s: not applied by foldserve (ONNX Runtime on CPU, one instance per worker "
            "process), ignored: %s",
            where,
            ", ".join(ignored),
            extra={"model": folder.name, "ignored": list(ignored)},
        )
    return TritonConfig(file, message, ignored)


def triton_name(folder: Path) -> str | None:
    """The name a model directory's config.pbtxt gives; None without one (or when it cannot be
    read: loading the model refuses it, with the reason)."""
    try:
        message, _ = parse_model_config((folder / TRITON_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, PbtxtError):
        return None
    return message.name or None


def _check(message: ModelConfig, directory: str, where: str) -> None:
    if message.name and message.name != directory:
        raise ModelError(
            f"{where}: name {message.name!r} is not the model directory's name {directory!r} "
            "(Triton's rule: leave it out, or give the directory's name)"
        )
    for key, value, allowed in (
        ("platform", message.platform, PLATFORM),
        ("backend", message.backend, BACKEND),
    ):
        if value not in ("", allowed):
            raise ModelError(
                f"{where}: {key} {value!r}: not an ONNX model; foldserve serves ONNX models "
                f"(platform {PLATFORM!r}, backend {BACKEND!r}, or neither given)"
            )
    if message.max_batch_size < 0:
        raise ModelError(f"{where}: max_batch_size {message.max_batch_size}: expected 0 or more")
    policy = message.version_policy
    if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 1:
        raise ModelError(f"{where}: version_policy latest num_versions: expected 1 or more")
    if any(v < 0 for v in policy.specific.versions):
        raise ModelError(f"{where}: version_policy specific versions: expected numbers >= 0")
    filename = message.default_model_filename
    if filename and (Path(filename).name != filename or filename in (".", "..")):
        raise ModelError(
            f"{where}: default_model_filename {filename!r}: expected a file name, no directory"
        )


class ConfigWatch:
    """A model directory's config.pbtxt, read again only when the file changes: its warning and
    its refusal come once per change, not at every look for new versions.

    Args:
        folder: the model directory; None (a single model file): no config.pbtxt.
    """

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder
        self._stamp: tuple[int, int] | None = None
        self._read: TritonConfig | ModelError | None = None
        self.fresh = False

    def read(self) -> TritonConfig | None:
        """The config now (None: none); `fresh` tells whether the file changed since last read.

        Raises:
            ModelError: the file is bad (the same error until it changes).
        """
        stamp = self._stamp_now()
        self.fresh = stamp != self._stamp
        if self.fresh:
            self._stamp = stamp
            try:
                self._read = None if stamp is None else read_triton_config(self._folder)  # type: ignore[arg-type]
            except ModelError as exc:
                self._read = exc
        if isinstance(self._read, ModelError):
            raise self._read
        return self._read

    def _stamp_now(self) -> tuple[int, int] | None:
        if self._folder is None:
            return None
        try:
            stat = (self._folder / TRITON_CONFIG_FILE).stat()
        except OSError:
            return None
        return (stat.st_size, stat.st_mtime_ns)
