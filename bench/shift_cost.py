"""What the covariate-shift monitor costs per call: model runs with it on and off, side by side.

    .venv/bin/python bench/shift_cost.py --model models/default/model.onnx [--model other.onnx]

For each model file it times, in interleaved blocks (so load from elsewhere hits every variant
alike), the CPU time per call of the thread doing the work (`time.thread_time`, not wall time):

- `run, monitor off`: `ModelRunner.run` of one example on the graph without taps (what
  predictions cost with `--shift-monitor off`);
- `run, monitor on`: the same with the tapped graph and the monitor (its state in the process);
- `run, monitor shared`: the same with the state in a file every worker maps (`--workers N`);
- `onnxruntime, no taps` / `taps`: the session runs alone (what the tap nodes cost);
- `observe`: the monitor's own share of a call (a row copy; every `--check-every` calls a
  fold: summaries, normal scores and the CUSUM walk over the batch, under the state's lock);
- `snapshot`: what each Prometheus scrape or DescribeModel pays.

It prints the medians of `--blocks` blocks of `--calls` calls and the monitor's cost per call
(on minus off).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from foldserve.contract import TAPS
from foldserve.core.loading import load_model
from foldserve.core.metrics import Metrics
from foldserve.core.runner import ModelRunner
from foldserve.core.shift.settings import SHIFT_CHECK_EVERY, ShiftSettings


def _per_call_us(work: Callable[[], object], calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        work()
    return (time.thread_time() - start) / calls * 1e6


def _runners(path: str, check_every: int, state_dir: str) -> dict[str, ModelRunner]:
    metrics = Metrics(CollectorRegistry(), process=False)
    runners = {}
    for name, monitor, settings in (
        ("off", False, ShiftSettings(enabled=False)),
        ("on", True, ShiftSettings(check_every=check_every, state_dir=None)),
        ("shared", True, ShiftSettings(check_every=check_every, state_dir=state_dir)),
    ):
        model = load_model(path, monitor=monitor)
        series = metrics.for_version(
            "bench", name, sha256="-", opset=0, foldserve_version="-",
            class_labels=model.class_labels,
        )  # fmt: skip
        runners[name] = ModelRunner(model, series, settings)
    if runners["on"].monitor is None:
        raise SystemExit(f"{path}: no shift reference; export it again or run foldserve calibrate")
    return runners


def measure(path: str, calls: int, blocks: int, check_every: int) -> dict[str, float]:
    """Median CPU µs per call of each variant for one model file."""
    with tempfile.TemporaryDirectory(prefix="foldserve-shift-", dir=_memory_fs()) as state_dir:
        runners = _runners(path, check_every, state_dir)
        model = runners["on"].model
        feed_name = model.classifier.input.name
        examples = _examples(model, calls)
        batch = examples[:1]
        feeds = {feed_name: batch}
        names = list(model.output_names)
        outputs = model.run(feeds, [*names, TAPS], tapped=True)
        rows = model.shift.rows(batch, dict(outputs))
        labels = outputs[model.classifier.logits].argmax(axis=1)
        monitor = runners["on"].monitor
        cycle = _Cycle(examples, feeds, feed_name)
        variants = {
            "run, monitor off": lambda: runners["off"].run(cycle(), names, None),
            "run, monitor on": lambda: runners["on"].run(cycle(), names, None),
            "run, monitor shared": lambda: runners["shared"].run(cycle(), names, None),
            "onnxruntime, no taps": lambda: model.run(feeds, names),
            "onnxruntime, taps": lambda: model.run(feeds, [*names, TAPS], tapped=True),
            "observe": lambda: monitor.observe(rows, labels),
            "snapshot": monitor.snapshot,
        }
        return _timed(variants, calls, blocks)


class _Cycle:
    """The next clean example as a feed, each call (one index bump: no allocation)."""

    def __init__(self, examples: np.ndarray, feeds: dict, name: str) -> None:
        self._examples, self._feeds, self._name, self._at = examples, feeds, name, 0

    def __call__(self) -> dict:
        self._at = (self._at + 1) % len(self._examples)
        self._feeds[self._name] = self._examples[self._at : self._at + 1]
        return self._feeds


def _examples(model, count: int) -> np.ndarray:
    """Clean examples for the model: the digits test split it was trained with (as the shift
    evaluation streams it), else uniform noise (which the monitor then finds shifted)."""
    shape = model.classifier.example_shape
    split = model.training.training_metrics.get("split") if model.training else None
    if model.training is not None and model.training.dataset == "digits" and split:
        from foldserve.datasets import load_dataset, split_dataset

        parts = split_dataset(
            load_dataset("digits"), int(split["seed"]), float(split["val_fraction"]),
            float(split["test_fraction"]),
        )  # fmt: skip
        return np.ascontiguousarray(parts.test.features.reshape(-1, *shape), np.float32)
    rng = np.random.default_rng(0)
    return (rng.random((count, *shape)) * 16).astype(np.float32)


def _timed(variants: dict[str, Callable[[], object]], calls: int, blocks: int) -> dict:
    for work in variants.values():
        _per_call_us(work, 200)  # warm up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(blocks):
        for name, work in variants.items():
            times[name].append(_per_call_us(work, calls if name != "snapshot" else calls // 10))
    return {name: statistics.median(values) for name, values in times.items()}


def _memory_fs() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="model.onnx (repeatable)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per block")
    parser.add_argument("--blocks", type=int, default=15, help="blocks (the median is reported)")
    parser.add_argument(
        "--check-every", type=int, default=SHIFT_CHECK_EVERY, help="examples per fold"
    )
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for path in args.model:
        result = measure(path, args.calls, args.blocks, args.check_every)
        print(f"\n{path} (CPU µs per call, median of {args.blocks} blocks of {args.calls})")
        for name, value in result.items():
            print(f"  {name:<22} {value:8.2f}")
        for variant in ("on", "shared"):
            cost = result[f"run, monitor {variant}"] - result["run, monitor off"]
            print(f"  {f'monitor cost ({variant})':<22} {cost:8.2f}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
