"""Finding and reading the optional `config.json` next to a model file (`contract.config`).

A single model file reads the `config.json` in its own directory. A version of a model repository
(`<dir>/<version>/model.onnx`) reads `<dir>/config.json`, shared by every version, and its own
`<dir>/<version>/config.json`; key by key, the version's own wins. In a repository the versions
are the directory names and the served name is the repository's, so a version's own config may
not give `name`, and no config of a repository may give `version`.
"""

from __future__ import annotations

from pathlib import Path

from foldserve.contract import CONFIG_FILE, ContractError, ModelConfig, parse_config
from foldserve.contract.config import NAME, VERSION
from foldserve.contract.layout import MODEL_FILE
from foldserve.core.errors import ModelError
from foldserve.core.triton_config import triton_name


def read_config(file: Path) -> ModelConfig:
    """One config file (absent: the empty config).

    Raises:
        ModelError: unreadable, or not a valid config; the message names the file and the key.
    """
    if not file.exists():
        return ModelConfig()
    where = f"config file {str(file)!r}"
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where} cannot be read: {exc}") from None
    try:
        return parse_config(text)
    except ContractError as exc:
        raise ModelError(f"{where}: {exc}") from None


def config_files(model_file: Path, in_repository: bool) -> tuple[Path, ...]:
    """Where the config files of a model file are, its own first (they may not exist)."""
    own = model_file.parent / CONFIG_FILE
    return (own, model_file.parent.parent / CONFIG_FILE) if in_repository else (own,)


def config_for(model_file: Path, in_repository: bool) -> ModelConfig:
    """The config of a model file: its directory's, over the repository's when it is a version.

    Raises:
        ModelError: a bad config file, or a key the file's place does not allow.
    """
    files = config_files(model_file, in_repository)
    own = read_config(files[0])
    if not in_repository:
        return own
    own_file, shared_file = files
    shared = read_config(shared_file)
    for config, file, refused in (
        (own, own_file, (NAME, VERSION)),
        (shared, shared_file, (VERSION,)),
    ):
        for key in refused:
            if key in config.present():
                raise ModelError(
                    f"config file {str(file)!r}: {key}: not allowed here; in a model repository "
                    "the versions are its directory names and the name is in <dir>/config.json"
                )
    return own.over(shared)


def configured_name(source: str | Path) -> str | None:
    """The served name the config at `--model` gives: a model file's directory's config, or a
    directory's own `config.json`, else a directory's config.pbtxt. None when there is none, or
    it cannot be read (loading the model then refuses it, with the reason)."""
    path = Path(source)
    is_file = path.is_file() or path.name == MODEL_FILE
    folder = path.parent if is_file else path
    try:
        named = read_config(folder / CONFIG_FILE).name
    except ModelError:
        return None
    return named or (None if is_file else triton_name(folder))
