"""Run every experiment, then write results.json, the PNG figures and report.md into a folder."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from foldserve.training.lab import plots, report
from foldserve.training.lab.config import LabConfig
from foldserve.training.lab.experiments import batchsize, blackcat, speed, testtime
from foldserve.training.lab.experiments.nets import KINDS

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"


def _speed(cfg: LabConfig) -> dict:
    runs = speed.run(cfg, KINDS)
    return {
        "runs": runs,
        "summary": speed.summarize(runs),
        "stability": speed.stability(runs, cfg.reference_lr),
        "smoothness": speed.smoothness_summary(runs),
        "target": speed.TARGET_ACCURACY,
        "batch_size": speed.BATCH_SIZE,
    }


EXPERIMENTS: dict[str, Callable[[LabConfig], dict]] = {
    "speed": _speed,
    "batchsize": batchsize.run,
    "testtime": testtime.run,
    "blackcat": blackcat.run,
}


def run_lab(cfg: LabConfig, out: Path, threads: int, log: Callable[[str], None] = print) -> dict:
    """Run the lab at size `cfg` on `threads` CPU threads; write its files into `out`.

    Returns:
        The results, as written to `out/results.json` (with `meta`: timings and machine load).
    """
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    started = time.perf_counter()
    results: dict = {"meta": _meta(cfg, threads)}
    seconds: dict[str, float] = {}
    for name, experiment in EXPERIMENTS.items():
        begun = time.perf_counter()
        results[name] = experiment(cfg)
        seconds[name] = round(time.perf_counter() - begun, 1)
        log(f"lab: {name} done in {seconds[name]} s")
    begun = time.perf_counter()
    figures = plots.draw_all(results, out)
    seconds["plots"] = round(time.perf_counter() - begun, 1)
    results["meta"].update(
        seconds=seconds,
        total_seconds=round(time.perf_counter() - started, 1),
        load_average_after=[round(v, 2) for v in os.getloadavg()],
        figures=[f.name for f in figures],
    )
    (out / RESULTS_FILE).write_text(json.dumps(_rounded(results), allow_nan=False) + "\n")
    (out / REPORT_FILE).write_text(report.render(results))
    log(f"lab: wrote {out / REPORT_FILE}, {out / RESULTS_FILE} and {len(figures)} figures")
    return results


def _meta(cfg: LabConfig, threads: int) -> dict:
    return {
        "config": asdict(cfg),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "cpus": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
    }


def _rounded(value):
    """Floats to 6 significant digits (the file stays small), and non-finite ones to null."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
