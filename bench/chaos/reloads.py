"""The `reloads` rows: versions and models coming and going under load, `--workers 2`.

One server, `--model-repository` in `explicit` mode, three models of the same file:
- `stay`: loaded from start to end; the load (64 calls in flight, gRPC) calls it throughout;
- `churn`: new version directories appear one after another (moved into place whole) and the
  reload watcher (`--poll-seconds`) loads each; its config.pbtxt keeps the newest two
  (`version_policy: { latest: { num_versions: 2 } }`), so every older one unloads;
- `cycle`: loaded and unloaded by a client (RepositoryModelLoad/Unload over gRPC), on every
  worker.

Each row: no call to `stay` fails; resident memory of the supervisor and its workers grows less
than the bound; /metrics (the supervisor's merged view) shows only the versions loaded.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from foldserve.bench.chaos.harness import Row, Serving, infer_request, serve
from foldserve.bench.chaos.kill import _calls
from foldserve.bench.chaos.load import Call, Load, statuses
from foldserve.bench.chaos.watch import Admin, LogWatch, scrape, series_versions

RSS_BOUND_MB = 20.0
WORKERS = 2
POLL_SECONDS = 0.05
FULL = {"versions": 1000, "cycles": 100, "warm": 3000, "warm_versions": 100}
SHORT = {"versions": 20, "cycles": 5, "warm": 300, "warm_versions": 5}
POLICY = "version_policy: { latest: { num_versions: 2 } }\n"


def repository(model: Path, root: Path) -> Path:
    """stay/1, churn/1 and churn/2 (with its config.pbtxt), cycle/1: all `model`."""
    shutil.rmtree(root, ignore_errors=True)
    for name, versions in (("stay", (1,)), ("churn", (1, 2)), ("cycle", (1,))):
        for version in versions:
            (root / name / str(version)).mkdir(parents=True)
            shutil.copy(model, root / name / str(version) / "model.onnx")
    (root / "churn" / "config.pbtxt").write_text(POLICY)
    return root


def _push(root: Path, model: Path, version: int) -> None:
    """A new version directory, moved into place whole; the one three back removed (it is
    unloaded by now, and the directory stays small)."""
    staging = root / "churn" / f".{version}"
    staging.mkdir()
    shutil.copy(model, staging / "model.onnx")
    staging.rename(root / "churn" / str(version))
    shutil.rmtree(root / "churn" / str(version - 3), ignore_errors=True)


async def _settled_rss(serving: Serving) -> float:
    """RSS once the last unloads are freed (a few polls later) and a scrape is done."""
    await asyncio.sleep(5 * POLL_SECONDS)
    await asyncio.to_thread(scrape, serving)
    return serving.rss_mb()


def _window(calls: list[Call], start: float, end: float) -> list[Call]:
    return [c for c in calls if start <= c.start < end]


async def _versions_row(
    serving: Serving, load: Load, root: Path, model: Path, count: int, warm: int
) -> Row:
    """`count` versions; RSS is compared from the end of the first `warm` (the allocators and
    onnxruntime reach their high-water marks there) to the end."""
    watch = LogWatch(serving.log)
    cold, start = await _settled_rss(serving), time.monotonic()
    lags = []
    for version in range(3, count + 3):
        if version == warm + 3:
            before = await _settled_rss(serving)
        pushed = time.monotonic()
        await asyncio.to_thread(_push, root, model, version)
        key = ("churn", str(version))
        done = await watch.until(lambda w, key=key: w.loaded[key] >= WORKERS)
        lags.append(done - pushed)
    end = time.monotonic()
    after = await _settled_rss(serving)
    text, seconds = await asyncio.to_thread(scrape, serving)
    shown = series_versions(text)
    wanted = {"stay": {"1"}, "churn": {str(count + 1), str(count + 2)}}
    counted = statuses(_window(load.calls, start, end))
    loaded = sum(1 for lag in lags if lag == lag)  # not nan
    errors = sum(n for k, n in counted.items() if k != "OK")
    passed = not errors and after - before < RSS_BOUND_MB and shown == wanted and loaded == count
    saw = (
        f"{loaded} of {count} versions loaded by both workers; /metrics shows versions "
        f"{_shown(shown)} (scrape {seconds * 1e3:.0f} ms); RSS over the first {warm} "
        f"(warm-up) {before - cold:+.1f} MB, then as shown"
    )
    recovery = f"each served {_median(lags) * 1e3:.0f} ms after its push (max {max(lags):.2f} s)"
    bound = f"0 failed; RSS growth after warm-up < {RSS_BOUND_MB:.0f} MB; /metrics: loaded only"
    name = f"{count:,} version reloads (latest 2 kept), --workers 2"
    return Row(name, bound, passed, counted, saw, recovery, (before, after))


async def _cycles_row(serving: Serving, load: Load, count: int) -> Row:
    admin = Admin(serving)
    before, start = await _settled_rss(serving), time.monotonic()
    answers = []
    try:
        for _ in range(count):
            answers += [await admin.load("cycle"), await admin.unload("cycle")]
    finally:
        await admin.close()
    end = time.monotonic()
    after = await _settled_rss(serving)
    shown, seconds, lag = await _shown_once_settled(serving, "cycle", end)
    counted = statuses(_window(load.calls, start, end))
    refused = sum(answer != "OK" for answer in answers)
    errors = sum(n for k, n in counted.items() if k != "OK")
    passed = not errors and not refused and after - before < RSS_BOUND_MB and "cycle" not in shown
    saw = (
        f"{count * 2 - refused} of {count * 2} load/unload calls OK; /metrics shows "
        f"{_shown(shown)} (scrape {seconds * 1e3:.0f} ms, {lag:.2f} s after the last unload)"
    )
    recovery = f"{(end - start) / count * 1e3:.0f} ms per cycle on both workers"
    bound = f"0 failed; RSS growth < {RSS_BOUND_MB:.0f} MB; /metrics: loaded models only"
    name = f"{count} model load/unload cycles, --workers 2"
    return Row(name, bound, passed, counted, saw, recovery, (before, after))


async def _shown_once_settled(serving: Serving, gone: str, since: float, bound: float = 5.0):
    """/metrics' versions once `gone` has left it (or after `bound` seconds): the workers drop
    an unloaded model's series as their last calls and publications end, not all in the same
    instant. (versions shown, seconds the scrape took, seconds since `since`)"""
    while True:
        text, seconds = await asyncio.to_thread(scrape, serving)
        shown = series_versions(text)
        waited = time.monotonic() - since
        if gone not in shown or waited > bound:
            return shown, seconds, waited
        await asyncio.sleep(0.1)


def _shown(shown: dict[str, set[str]]) -> str:
    return "; ".join(f"{m} {', '.join(sorted(v, key=_number))}" for m, v in sorted(shown.items()))


def _number(version: str) -> int:
    return int(version) if version.isdigit() else -1


def _median(values: list[float]) -> float:
    ordered = sorted(v for v in values if v == v)
    return ordered[len(ordered) // 2] if ordered else float("nan")


async def reload_rows(args, workdir: Path, short: bool) -> list[Row]:
    sizes = SHORT if short else FULL
    root = repository(args.model, workdir / "reloads-repository")
    flags = [
        "--model-repository", str(root), "--model-control-mode", "explicit",
        "--load-model", "stay,churn", "--workers", str(WORKERS),
        "--poll-seconds", str(POLL_SECONDS),
    ]  # fmt: skip
    with serve(flags, workdir, "reloads") as serving:
        load = Load(
            serving.target("grpc"), infer_request(args.model, "stay"), "grpc", args.in_flight
        )
        running = asyncio.ensure_future(load.run())
        try:
            await _calls(load, sizes["warm"])  # the load's own buffers, before the first RSS
            rows = [
                await _versions_row(
                    serving, load, root, args.model, sizes["versions"], sizes["warm_versions"]
                )
            ]
            rows.append(await _cycles_row(serving, load, sizes["cycles"]))
        finally:
            load.stop()
            await running
    return rows
