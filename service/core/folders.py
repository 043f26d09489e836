"""Folders a server's processes share: made by the supervisor before it starts its workers and
named to them in an environment variable, or made by a process of its own when none is named."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def shared_folder(env: str, prefix: str, parent: str | None = None) -> Iterator[str]:
    """The supervisor's side: a fresh directory (under `parent`) named in `env` for the
    processes it starts from here on; removed, and the variable unset, on exit. When the
    variable is already set, that directory is used (and left in place)."""
    given = os.environ.get(env)
    if given:  # named by whoever started the server: theirs
        yield given
        return
    folder = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.environ[env] = folder
    try:
        yield folder
    finally:
        os.environ.pop(env, None)
        shutil.rmtree(folder, ignore_errors=True)


def own_folder(env: str, prefix: str) -> str:
    """The directory named in `env`, else a fresh one of this process's, removed at its exit."""
    given = os.environ.get(env)
    if given:
        return given
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
