"""What a worker's metric files cost, with prometheus_client's multiprocess value class and with
foldserve's (`foldserve.core.metric_files`): after N versions loaded and unloaded one after
another (the series every loaded version has: 18 RPC methods, 10 classes, as the server makes
them), the files' size, the worker's heap, and what one scrape of the supervisor costs (time and
peak memory of its merge); and the cost of one counter increment and of one compaction.

    python -m foldserve.bench.metric_files [--versions 100 1000]

Each figure comes from a process of its own (the value class is chosen once per process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

METHODS = [f"Method{i}" for i in range(18)]
CLASSES = [str(i) for i in range(10)]


def _worker(kind: str, versions: int, folder: str) -> dict:
    """In this process: load and unload `versions` versions' series; measure."""
    if kind == "foldserve":
        from foldserve.core.metric_files import MetricFiles

        MetricFiles(folder).install()
    from prometheus_client import CollectorRegistry

    from foldserve.core.metrics import Metrics

    tracemalloc.start()
    metrics = Metrics(CollectorRegistry(), methods=METHODS, process=False)
    held = []
    for version in range(versions):
        held.append(metrics.for_version("m", str(version), sha256="0" * 64, opset=17,
                                        foldserve_version="0", class_labels=CLASSES))  # fmt: skip
        held[-1].method("Method0").record("OK", 0.001)
        if len(held) > 2:  # the newest two stay loaded
            held.pop(0).remove()
    heap = tracemalloc.get_traced_memory()[0] / 1e6
    counter = held[-1].method("Method0")._codes["OK"]
    started = time.perf_counter()
    for _ in range(100_000):
        counter.inc()
    inc_us = (time.perf_counter() - started) / 100_000 * 1e6
    files = sum(p.stat().st_size for p in Path(folder).glob("*.db")) / 1e6
    return {"heap_mb": heap, "files_mb": files, "inc_us": inc_us}


def _scrape(folder: str) -> dict:
    """One scrape of the supervisor's view of `folder`: seconds and peak MB of the merge."""
    from prometheus_client import CollectorRegistry, generate_latest

    from foldserve.server.supervise import LoadedVersionsOnly

    registry = CollectorRegistry()
    registry.register(LoadedVersionsOnly(folder))
    tracemalloc.start()
    started = time.perf_counter()
    text = generate_latest(registry)
    seconds = time.perf_counter() - started
    return {"scrape_ms": seconds * 1e3, "scrape_peak_mb": tracemalloc.get_traced_memory()[1] / 1e6,
            "scrape_kb": len(text) / 1e3}  # fmt: skip


def _compaction() -> dict:
    """One compaction of a histogram file holding two loaded versions and as many dead bytes."""
    from foldserve.core import metric_files

    with tempfile.TemporaryDirectory() as folder:
        store = metric_files.MetricFiles(folder)
        value = store.value_class
        live = [value("histogram", "h", "h_bucket", ("v", "le"), (str(v), str(b)), "Help. " * 20)
                for v in range(2) for b in range(540)]  # fmt: skip
        dead = [value("histogram", "h", "h_bucket", ("v", "le"), ("x", str(b)), "Help. " * 20)
                for b in range(1080)]  # fmt: skip
        del dead
        file = store.files["histogram"]
        with store.lock:
            while store.freed:
                key_file, key = store.freed.popleft()
                key_file.release(key)
            started = time.perf_counter()
            file._open({k: (0.0, 0.0) for k in file.users})
            seconds = time.perf_counter() - started
        store.close()
        del live
    return {"compaction_ms": seconds * 1e3}


def _child(kind: str, versions: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="foldserve-bench-metrics-") as folder:
        environ = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}
        code = "import sys, json; from foldserve.bench import metric_files as m; " \
               f"print(json.dumps(m._worker({kind!r}, {versions}, {folder!r})))"  # fmt: skip
        worker = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                                text=True, check=True)  # fmt: skip
        scrape = subprocess.run(
            [sys.executable, "-c", "import json; from foldserve.bench import metric_files as m; "
             f"print(json.dumps(m._scrape({folder!r})))"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    return {**json.loads(worker.stdout), **json.loads(scrape.stdout)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args(argv)
    print("| value class | versions | files MB | worker heap MB | scrape ms | scrape peak MB "
          "| one inc µs |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for versions in args.versions:
        for kind in ("prometheus_client", "foldserve"):
            got = _child(kind, versions)
            print(
                f"| {kind} | {versions} | {got['files_mb']:.1f} | {got['heap_mb']:.1f} | "
                f"{got['scrape_ms']:.0f} | {got['scrape_peak_mb']:.1f} | {got['inc_us']:.2f} |"
            )
    compaction_ms = _compaction()["compaction_ms"]
    print(f"\none compaction (2 live versions' histogram series): {compaction_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
