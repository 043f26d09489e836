"""The `repository` rows: a model repository that goes wrong under a server that serves from it,
`--workers 2`, under load (64 calls in flight, gRPC).

Model `m` has versions 1 and 2, a config.pbtxt (the newest two versions) and a config.json;
the load calls its version 2, which most faults strike.
Each fault breaks one thing, waits until both workers have refused it (the log), reads
RepositoryIndex, then mends it and times until both workers have loaded it again, against the
poll interval:

- a serving version's model.onnx truncated, or its first bytes overwritten;
- a version directory swapped for a symlink to another directory (holding a broken file);
- the model's config.pbtxt or config.json rewritten invalid;
- a new version whose model.onnx is still being written ("disk full during a copy"), then
  completed.

A file made unreadable (chmod 000) cannot be tried as root, who reads it anyway: the row says so.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from foldserve.bench.chaos.harness import Row, infer_request, serve
from foldserve.bench.chaos.kill import _calls
from foldserve.bench.chaos.load import Load, statuses
from foldserve.bench.chaos.watch import Admin, LogWatch

WORKERS = 2
POLL_SECONDS = 0.5
RECOVERY_BOUND = POLL_SECONDS + 1.0
POLICY = "version_policy: { latest: { num_versions: 2 } }\n"


@dataclass(frozen=True)
class Fault:
    """What breaks (`version` of `m`, "": its config), how, and how it is mended."""

    name: str
    version: str
    breaks: Callable[[Path], None]
    mends: Callable[[Path], None]
    config: str = ""  # the config file it breaks (its refusal is logged per model)


def _keep(root: Path, version: str) -> None:
    shutil.copy(root / "m" / version / "model.onnx", root / f".good-{version}.onnx")


def _restore(root: Path, version: str) -> None:
    """Put the good file back whole: written beside it, then renamed over it."""
    staging = root / "m" / version / ".model.onnx"
    shutil.copy(root / ".good-2.onnx", staging)
    staging.rename(root / "m" / version / "model.onnx")


def _truncate(root: Path) -> None:
    path = root / "m" / "2" / "model.onnx"
    os.truncate(path, path.stat().st_size // 2)


def _overwrite(root: Path) -> None:
    with (root / "m" / "2" / "model.onnx").open("r+b") as file:
        file.write(b"\xff" * 64)


def _symlink(root: Path) -> None:
    elsewhere = root / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "model.onnx").write_bytes(b"not a model")
    (root / "m" / "2").rename(root / "m" / ".2-real")
    (root / "m" / "2").symlink_to(elsewhere, target_is_directory=True)


def _unlink(root: Path) -> None:
    (root / "m" / "2").unlink()
    (root / "m" / ".2-real").rename(root / "m" / "2")


def _bad_text(name: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / "m" / name).write_text(text)


def _partial(root: Path) -> None:
    good = (root / ".good-2.onnx").read_bytes()
    (root / "m" / "3").mkdir()
    (root / "m" / "3" / "model.onnx").write_bytes(good[: len(good) * 2 // 5])


def _complete(root: Path) -> None:
    good = (root / ".good-2.onnx").read_bytes()
    with (root / "m" / "3" / "model.onnx").open("ab") as file:
        file.write(good[len(good) * 2 // 5 :])


FAULTS = (
    Fault("model.onnx of the serving version truncated", "2", _truncate,
          lambda root: _restore(root, "2")),
    Fault("model.onnx of the serving version: first bytes overwritten", "2", _overwrite,
          lambda root: _restore(root, "2")),
    Fault("version directory swapped for a symlink elsewhere", "2", _symlink, _unlink),
    Fault("config.pbtxt turns invalid", "2", _bad_text("config.pbtxt", "version_policy: {"),
          _bad_text("config.pbtxt", POLICY), config="config.pbtxt"),
    Fault("config.json turns invalid", "2", _bad_text("config.json", "{not json"),
          _bad_text("config.json", "{}\n")),
    Fault("new version half written (disk full), then completed", "3", _partial, _complete),
)  # fmt: skip
SHORT = ("truncated", "half written")


def repository(model: Path, root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    for version in ("1", "2"):
        (root / "m" / version).mkdir(parents=True)
        shutil.copy(model, root / "m" / version / "model.onnx")
    (root / "m" / "config.pbtxt").write_text(POLICY)
    (root / "m" / "config.json").write_text("{}\n")
    _keep(root, "2")
    return root


async def _index_says(admin: Admin, version: str, root: Path) -> str:
    for entry in await admin.index():
        if entry.name == "m" and entry.version == version:
            return f"index: {version} {entry.state} {_short(entry.reason, root)[:110]!r}"
    return f"index: no entry for {version}"


def _short(reason: str, root: Path) -> str:
    return reason.replace(str(root) + "/", "")


async def _fault_row(serving, load: Load, admin: Admin, root: Path, fault: Fault) -> Row:
    watch = LogWatch(serving.log)
    watch.read()
    key = ("m", fault.version)
    refused, loaded = watch.refused[key], watch.loaded[key]
    bad_config = watch.config_refused["m"]
    before, start = serving.rss_mb(), time.monotonic()
    await asyncio.to_thread(fault.breaks, root)
    if fault.config == "config.pbtxt":  # logged per model, the loaded versions kept
        seen = await watch.until(lambda w: w.config_refused["m"] >= bad_config + WORKERS)
        reason = watch.config_reasons.get("m", "")
    else:
        seen = await watch.until(lambda w: w.refused[key] >= refused + WORKERS)
        reason = watch.reasons.get(key, "")
    index = await _index_says(admin, fault.version, root)
    mended = time.monotonic()
    await asyncio.to_thread(fault.mends, root)
    done = await watch.until(lambda w: w.loaded[key] >= loaded + WORKERS)
    await _calls(load, 200)
    end, after = time.monotonic(), serving.rss_mb()
    counted = statuses([c for c in load.calls if start <= c.start < end])
    errors = sum(n for k, n in counted.items() if k != "OK")
    recovery = done - mended
    found = seen == seen and bool(reason)
    passed = not errors and found and recovery < RECOVERY_BOUND
    saw = (
        f"refused by both workers {seen - start:.2f} s after; {index}"
        if found
        else "not refused by both workers in time"
    )
    return Row(
        f"{fault.name} (m/{fault.version or fault.config})",
        f"0 failed; refused with its reason; serving again < {RECOVERY_BOUND:.1f} s after the fix",
        passed, counted, saw,
        f"loaded again by both workers {recovery:.2f} s after the fix (poll {POLL_SECONDS} s)",
        (before, after),
    )  # fmt: skip


def _unreadable_row() -> Row:
    name = "model.onnx made unreadable (chmod 000)"
    if os.geteuid() == 0:
        why = "running as root, who reads it anyway; the corruption rows stand for it"
        return Row(name, "", True, skipped=why)
    return Row(name, "", True, skipped="not run: see the docs")


async def repository_rows(args, workdir: Path, short: bool) -> list[Row]:
    root = repository(args.model, workdir / "faulty-repository")
    flags = ["--model-repository", str(root), "--workers", str(WORKERS),
             "--poll-seconds", str(POLL_SECONDS)]  # fmt: skip
    faults = [f for f in FAULTS if not short or any(word in f.name for word in SHORT)]
    rows = []
    with serve(flags, workdir, "repository") as serving:
        request = infer_request(args.model, "m")
        request.model_version = "2"  # the version most faults strike: it must keep answering
        load = Load(serving.target("grpc"), request, "grpc", args.in_flight)
        running = asyncio.ensure_future(load.run())
        admin = Admin(serving)
        try:
            await _calls(load, 500)
            for fault in faults:
                rows.append(await _fault_row(serving, load, admin, root, fault))
        finally:
            await admin.close()
            load.stop()
            await running
    return [*rows, _unreadable_row()]
