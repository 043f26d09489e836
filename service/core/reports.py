"""What Triton's model configuration and statistics extensions answer, from the loaded models.

`model_config` is the configuration Triton would report for a loaded version: Triton's
`ModelConfig` message (our subset), which is also what the core reads config.pbtxt into, so it
is a value of the core rather than a message of a protocol. Without a config.pbtxt it describes
the graph as served: `max_batch_size` 0 and every input's and output's full shape as `dims`.
"""

from __future__ import annotations

from pathlib import Path

from foldserve._proto.inference.model_config_pb2 import (
    ModelConfig,
    ModelInput,
    ModelInstanceGroup,
    ModelOutput,
)
from foldserve.core.errors import invalid
from foldserve.core.graph import TensorSpec
from foldserve.core.interface import triton_type
from foldserve.core.model import Model
from foldserve.core.repository import Repository
from foldserve.core.stats import VersionStats
from foldserve.core.triton_config import BACKEND, PLATFORM, VersionPolicy


def model_config(model: Model, policy: VersionPolicy, instances: int) -> ModelConfig:
    """The configuration of a loaded version, as Triton reports one.

    Args:
        policy: the model's version policy (its config.pbtxt's, or `--keep-versions`).
        instances: the server processes that serve it: one CPU instance each.
    """
    interface = model.interface
    given = interface.config if interface is not None else ModelConfig()
    batch = interface.max_batch_size if interface is not None else 0
    cpu = ModelInstanceGroup(name=model.name, kind=ModelInstanceGroup.KIND_CPU, count=instances)
    config = ModelConfig(
        name=model.name,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=batch,
        version_policy=policy.message(),
        instance_group=[cpu],
        default_model_filename=Path(model.path).name,
    )
    declared_in = {t.name: t for t in given.input}
    for spec in model.inputs:
        tensor = config.input.add(name=spec.name, data_type=triton_type(spec.dtype))
        _shape(tensor, spec, batch, declared_in.get(spec.name))
    declared_out = {t.name: t for t in given.output}
    for spec in model.outputs:
        tensor = config.output.add(name=spec.name, data_type=triton_type(spec.dtype))
        declared = declared_out.get(spec.name)
        _shape(tensor, spec, batch, declared)
        if declared is not None:
            tensor.label_filename = declared.label_filename
    return config


def _shape(
    tensor: ModelInput | ModelOutput,
    spec: TensorSpec,
    batch: int,
    declared: ModelInput | ModelOutput | None,
) -> None:
    """A tensor's dims (-1: any size; the batch left out when there is one) and reshape."""
    shape = spec.shape[1:] if batch else spec.shape
    tensor.dims.extend(-1 if d is None else d for d in shape)
    if declared is not None and declared.HasField("reshape"):
        tensor.reshape.SetInParent()
        tensor.reshape.shape.extend(declared.reshape.shape)


def statistics(
    repository: Repository, name: str, version: str, fields: tuple[str, str]
) -> list[VersionStats]:
    """The statistics of every loaded version of every model (empty `name`), of one model
    (empty `version`) or of one version; models by name, versions newest first.

    Raises:
        RequestError: NOT_FOUND for a model or version not loaded (naming the field);
            INVALID_ARGUMENT for a version without a model name.
    """
    name_field, version_field = fields
    if not name:
        if version:
            raise invalid(f"{version_field}: {version!r} given without {name_field}")
        models = sorted(repository, key=lambda m: m.name)
        return [v.stats.snapshot(m.name, v.version) for m in models for v in m.versions]
    if name not in repository.names:
        repository.resolve(name, version, fields)  # NOT_FOUND naming the field, with the reason
    found = repository.model(name)
    chosen = found.versions if not version else (found.resolve(version, version_field),)
    return [v.stats.snapshot(found.name, v.version) for v in chosen]
