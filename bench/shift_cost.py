"""What the covariate-shift monitor costs per call: model runs with it on and off, side by side.

    .venv/bin/python bench/shift_cost.py --model models/default/model.onnx [--model other.onnx]

For each model file it times, in interleaved blocks (so load from elsewhere hits every variant
alike), the CPU time per call of the thread doing the work (`time.thread_time`, not wall time):

- `run, monitor off`: `ModelRunner.run` on the graph without taps (what predictions cost today);
- `run, monitor on`: the same with the tapped graph and the monitor's update;
- `onnxruntime, taps`: only the session run that also fetches the taps, and `observe`: only the
  monitor's update (one multiply-add and the scoring every `--check-every` examples);
- `snapshot`: one fresh scoring, what each Prometheus scrape or DescribeModel pays.

It prints the medians of `--blocks` blocks of `--calls` calls and the monitor's cost per call
(on minus off).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from foldserve.contract import LOGITS, TAPS
from foldserve.core.call import Call
from foldserve.core.loading import load_model
from foldserve.core.metrics import Metrics
from foldserve.core.runner import ModelRunner
from foldserve.core.shift.settings import ShiftSettings


def _per_call_us(work: Callable[[], object], calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        work()
    return (time.thread_time() - start) / calls * 1e6


def measure(path: str, calls: int, blocks: int, check_every: int) -> dict[str, float]:
    """Median CPU µs per call of each variant for one model file."""
    settings = ShiftSettings(check_every=check_every)
    plain = load_model(path, monitor=False)
    tapped = load_model(path, monitor=True)
    registry = CollectorRegistry()
    metrics = Metrics(registry, process=False)

    def version_metrics(model, version: str):
        return metrics.for_version(
            "bench",
            version,
            sha256="-",
            opset=0,
            foldserve_version="-",
            class_labels=model.class_labels,
        )

    off = ModelRunner(plain, version_metrics(plain, "off"), settings)
    on = ModelRunner(tapped, version_metrics(tapped, "on"), settings)
    if on.monitor is None:
        raise SystemExit(f"{path}: no taps or no calibration; export it again")
    rng = np.random.default_rng(0)
    batch = (rng.random((1, *plain.require_classifier().example_shape)) * 16).astype(np.float32)
    outputs = tapped.run(batch, taps=True)
    labels = outputs[LOGITS].argmax(axis=1)
    variants = {
        "run, monitor off": lambda: off.run(batch, Call(time.perf_counter(), None)),
        "run, monitor on": lambda: on.run(batch, Call(time.perf_counter(), None)),
        "onnxruntime, no taps": lambda: plain.run(batch),
        "onnxruntime, taps": lambda: tapped.run(batch, taps=True),
        "observe": lambda: on.monitor.observe(outputs[TAPS], labels),
        "snapshot": on.monitor.snapshot,
    }
    for work in variants.values():
        _per_call_us(work, 200)  # warm up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(blocks):
        for name, work in variants.items():
            times[name].append(_per_call_us(work, calls))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="model.onnx (repeatable)")
    parser.add_argument("--calls", type=int, default=1000, help="calls per block")
    parser.add_argument("--blocks", type=int, default=15, help="blocks (the median is reported)")
    parser.add_argument("--check-every", type=int, default=1, help="the monitor's check interval")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for path in args.model:
        result = measure(path, args.calls, args.blocks, args.check_every)
        print(f"\n{path} (CPU µs per call, median of {args.blocks} blocks of {args.calls})")
        for name, value in result.items():
            print(f"  {name:<22} {value:8.2f}")
        cost = result["run, monitor on"] - result["run, monitor off"]
        print(f"  {'monitor cost per call':<22} {cost:8.2f}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
