"""`MetricFiles`: a worker's values in prometheus_client's multiprocess files, read by
prometheus_client's own collector, without the series the worker dropped."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

from foldserve.core import metric_files
from foldserve.core.metric_files import MetricFiles


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MetricFiles:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # put back afterwards
    store = MetricFiles(tmp_path)
    store.install()
    yield store
    store.close()


def merged(folder: Path) -> dict[tuple[str, tuple], float]:
    """What the supervisor serves: prometheus_client's merge of every file in `folder`."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in MultiProcessCollector(None, path=str(folder)).collect()
        for sample in family.samples
    }


def keys_in(path: Path) -> list[dict]:
    return [json.loads(k)[2] for k, _, _, _ in MmapedDict.read_all_values_from_file(str(path))]


def test_prometheus_client_reads_what_it_writes(files: MetricFiles, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    calls = Counter("calls_total", "Calls.", ["v"], registry=registry)
    seconds = Histogram("call_seconds", "Time.", ["v"], buckets=(0.1, 1.0), registry=registry)
    busy = Gauge("busy", "Busy.", ["v"], registry=registry, multiprocess_mode="livesum")
    calls.labels("1").inc(3)
    seconds.labels("1").observe(0.5)
    busy.labels("1").set(2)
    assert calls.labels("1")._value.get() == 3
    got = merged(tmp_path)
    assert got[("calls_total", (("v", "1"),))] == 3
    assert got[("call_seconds_bucket", (("le", "1.0"), ("v", "1")))] == 1
    assert got[("call_seconds_bucket", (("le", "0.1"), ("v", "1")))] == 0
    assert got[("call_seconds_sum", (("v", "1"),))] == 0.5
    assert got[("busy", (("v", "1"),))] == 2
    names = sorted(p.name for p in tmp_path.iterdir())
    pid = files.pid
    assert names == [f"counter_{pid}.db", f"gauge_livesum_{pid}.db", f"histogram_{pid}.db"]


def test_dropped_series_leave_the_file(
    files: MetricFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Series of 2,000 versions come and go, two at a time: the file holds the live ones (and
    fewer dead ones than the compaction threshold), and the merge shows the live ones only once
    compacted."""
    monkeypatch.setattr(metric_files, "COMPACT_BYTES", 4096)
    registry = CollectorRegistry()
    calls = Counter("calls_total", "Calls, with a long help text. " * 4, ["v"], registry=registry)
    for version in range(2000):
        calls.labels(str(version)).inc()
        if version >= 2:
            calls.remove(str(version - 2))
    calls.labels("new").inc()  # a new series settles the frees so far
    gc.collect()
    path = tmp_path / f"counter_{files.pid}.db"
    kept = {labels["v"] for labels in keys_in(path)}
    assert {"1998", "1999", "new"} <= kept
    assert len(kept) < 40, len(kept)
    assert path.stat().st_size <= 1 << 16
    assert files.files["counter"].compactions > 10


def test_a_series_made_again_starts_from_zero(files: MetricFiles, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    calls = Counter("calls_total", "Calls.", ["v"], registry=registry)
    calls.labels("1").inc(5)
    calls.remove("1")
    calls.labels("1").inc()
    assert merged(tmp_path)[("calls_total", (("v", "1"),))] == 1


def test_a_series_held_elsewhere_stays(files: MetricFiles, tmp_path: Path) -> None:
    """A call in flight may still hold an unloaded version's children: their values go on."""
    registry = CollectorRegistry()
    calls = Counter("calls_total", "Calls.", ["v"], registry=registry)
    held = calls.labels("1")
    calls.remove("1")
    held.inc(2)
    assert files.files["counter"].users == {json_key(calls, "1"): 1}
    assert merged(tmp_path)[("calls_total", (("v", "1"),))] == 2


def json_key(counter: Counter, version: str) -> str:
    from prometheus_client.mmap_dict import mmap_key

    return mmap_key("calls", "calls_total", ["v"], [version], counter._documentation)


def test_a_file_left_by_an_earlier_process_keeps_its_values(tmp_path: Path) -> None:
    """Pids are reused: the values a dead worker left under this pid are still counted."""
    old = MetricFiles(tmp_path, pid=4242)
    value = old.value_class("counter", "calls", "calls_total", ("v",), ("1",), "Calls.")
    value.inc(7)
    old.close()
    new = MetricFiles(tmp_path, pid=4242)
    other = new.value_class("counter", "calls", "calls_total", ("v",), ("2",), "Calls.")
    other.inc(1)
    assert merged(tmp_path)[("calls_total", (("v", "1"),))] == 7
    assert merged(tmp_path)[("calls_total", (("v", "2"),))] == 1
    new.close()


def test_the_supervisor_shows_the_loaded_versions_of_each_model(tmp_path: Path) -> None:
    """Versions are told apart by model: model a's version 1 is loaded, model b's version 1 was
    unloaded (its info 0, its series still in the file); calls refused before they named a
    model (model and version "") are always shown."""
    from foldserve.core.metrics import INFO_METRIC
    from foldserve.server.supervise import LoadedVersionsOnly

    worker = MetricFiles(tmp_path, pid=1)
    value = worker.value_class
    info = {"multiprocess_mode": "livemax"}
    info_labels = ("model", "version")
    held = [
        value("gauge", INFO_METRIC, INFO_METRIC, info_labels, ("a", "1"), "Info.", **info),
        value("gauge", INFO_METRIC, INFO_METRIC, info_labels, ("b", "1"), "Info.", **info),
    ]
    held[0].set(1)
    for labels in (("a", "1"), ("b", "1"), ("", "")):
        held.append(value("counter", "calls", "calls_total", info_labels, labels, "Calls."))
        held[-1].inc(1)
    shown = {
        (sample.name, sample.labels["model"], sample.labels["version"])
        for family in LoadedVersionsOnly(str(tmp_path)).collect()
        for sample in family.samples
    }
    assert shown == {(INFO_METRIC, "a", "1"), ("calls_total", "a", "1"), ("calls_total", "", "")}
    worker.close()


def test_a_workers_published_shift_series_go_with_their_version(
    files: MetricFiles, tmp_path: Path
) -> None:
    """Under --workers the shift monitor publishes each version's scores into gauges: once the
    version unloads, its children there are dropped too (each held a series in the file)."""
    import shutil

    from foldserve.core.metrics import Metrics
    from foldserve.core.versions import ModelVersions
    from tests.service.model_files import write_tapped_model

    repo = tmp_path / "repo"
    (repo / "1").mkdir(parents=True)
    write_tapped_model(repo / "1" / "model.onnx", [0.0, 1.0, 2.0, 3.0])
    registry = CollectorRegistry()
    versions = ModelVersions(repo, "m", Metrics(registry, process=False), keep=1)
    versions.start()

    def shift_versions() -> set[str]:
        return {
            sample.labels["version"]
            for family in registry.collect()
            if family.name.startswith("foldserve_shift")
            for sample in family.samples
        }

    first = shift_versions()
    (repo / "2").mkdir()
    shutil.copy(repo / "1" / "model.onnx", repo / "2" / "model.onnx")
    shutil.rmtree(repo / "1")
    versions.refresh()
    assert len(first) == 1 and shift_versions() == {versions.latest.version} != first
    versions.unload()
    assert shift_versions() == set()
