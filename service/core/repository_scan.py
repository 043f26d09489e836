"""What a model repository holds on disk: its model files, newest version first, each with a
fingerprint of the file and its config files (config.json, and a config.pbtxt with its label
files), so a change means "load again"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from foldserve.contract.layout import MODEL_FILE
from foldserve.core.model_config import config_files

# (size, mtime_ns) of the file, then of each of its config files (`model_config`): a change means
# "load again".
Fingerprint = tuple[int, ...]


@dataclass(frozen=True)
class Candidate:
    """A model file found in the repository; `version` None: the one its metadata records."""

    version: str | None
    path: Path
    fingerprint: Fingerprint

    @property
    def key(self) -> str:
        """What names it before it is loaded: its version, or (a single file) its path."""
        return self.version or str(self.path)


def scan(source: Path, filename: str = MODEL_FILE, shared: Sequence[Path] = ()) -> list[Candidate]:
    """The model files under `source`, newest version first.

    A file is one model; a directory holds numbered version directories, or (with none) a
    model file of its own, each named `filename`.

    Args:
        shared: more files every version depends on (a config.pbtxt and its label files): their
            changes are in every fingerprint.
    """
    if source.is_file():
        return [_candidate(None, source, shared)]
    versions = sorted(
        (int(child.name), child / filename)
        for child in (source.iterdir() if source.is_dir() else ())
        if child.name.isdigit() and (child / filename).is_file()
    )
    if not versions and (source / filename).is_file():
        return [_candidate(None, source / filename, shared)]
    return [_candidate(str(number), path, shared) for number, path in reversed(versions)]


def _candidate(version: str | None, path: Path, shared: Sequence[Path]) -> Candidate:
    stamps = [_stamp(path)]
    stamps += [_stamp(file) for file in config_files(path, in_repository=version is not None)]
    stamps += [_stamp(file) for file in shared]
    return Candidate(version, path, tuple(n for stamp in stamps for n in stamp))


def _stamp(file: Path) -> tuple[int, int]:
    try:
        stat = file.stat()
    except OSError:  # absent (a config file is optional), or gone between listing and looking
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)
