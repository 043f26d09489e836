"""The covariate-shift evaluation over several seeds: train, export (fitting the monitor's
reference), stream clean and shifted digits through a server with one worker and with two, replay
clean examples through the monitor alone, and print the worst seed against the targets.

    .venv/bin/python bench/shift_eval/seeds.py                      # MLP and CNN, seeds 0-4
    .venv/bin/python bench/shift_eval/seeds.py --archs mlp --seeds 0 --requests 300 --workers 1

Each (arch, seed) trains with `foldserve train --arch A --seed S` defaults into `--out/A-S/`
(`--reuse` exports the checkpoint there again instead), then runs `foldserve shift-eval` on it
for each worker count; results go to `--out/A-S/shift-eval-wN.json`, a plot to
`--out/A-S/shift-eval.png`. The seed fixes the data split too, so each seed's clean stream is
its own held-out test split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foldserve.bench.shift_eval.false_alarms import false_alarms
from foldserve.bench.shift_eval.report import markdown, save_plot
from foldserve.bench.shift_eval.run import StreamResult, evaluate
from foldserve.bench.shift_eval.tables import false_alarm_table, worker_table, worst
from foldserve.training.defaults import CHECKPOINT_FILE, EPOCHS

WORST_HEADER = (
    "stream", "alarm at (worst seed)", "fired", "peak statistic/threshold", "accuracy (lowest)",
    "alarm at, each seed", "target", "",
)  # fmt: skip


def train(arch: str, seed: int, out: Path, reuse: bool) -> Path:
    """The model file of (arch, seed): trained, or with `reuse` exported again (its reference
    fitted by this code) from the checkpoint a previous run left."""
    from foldserve.training.pipeline import TrainConfig, export_checkpoint, run_training
    from foldserve.training.train import FitSettings

    checkpoint = out / CHECKPOINT_FILE
    if reuse and checkpoint.is_file():
        return export_checkpoint(checkpoint, out).model_path
    fit = FitSettings(epochs=EPOCHS[arch], progress=False)
    result = run_training(TrainConfig(arch=arch, seed=seed, out=out, fit=fit))
    print(f"{arch} seed {seed}: test accuracy {result.metrics['test_accuracy']:.4f}", flush=True)
    return result.export.model_path


def run_seed(arch: str, seed: int, args: argparse.Namespace) -> dict:
    """One model's evaluation: its streams for each worker count, its clean replays."""
    out = args.out / f"{arch}-{seed}"
    model = train(arch, seed, out, args.reuse)
    by_workers: dict[int, list[StreamResult]] = {}
    for workers in args.workers:
        options = argparse.Namespace(
            model=str(model), requests=args.requests, clean_requests=args.clean_requests,
            streams=None, seed=seed, sample_every=args.sample_every, check_every=args.check_every,
            workers=workers,
        )  # fmt: skip
        print(f"{arch} seed {seed}, {workers} worker(s):", file=sys.stderr, flush=True)
        results = evaluate(options)
        (out / f"shift-eval-w{workers}.json").write_text(json.dumps([asdict(r) for r in results]))
        by_workers[workers] = results
    save_plot(by_workers[args.workers[0]], out / "shift-eval.png", title=f"{arch} seed {seed}")
    replays = false_alarms(model, args.false_alarm_replay, seed)
    (out / "false-alarms.json").write_text(json.dumps(replays))
    return {"streams": by_workers, "false_alarms": replays}


def print_arch(arch: str, runs: dict[int, dict], args: argparse.Namespace) -> None:
    """The tables of one architecture: worst seed against the targets, workers, false alarms."""
    seeds = ", ".join(map(str, runs))
    one = {seed: run["streams"][args.workers[0]] for seed, run in runs.items()}
    print(f"\n{arch}, {args.workers[0]} worker(s), worst of seeds {seeds}:\n")
    print(markdown(WORST_HEADER, worst(one)))
    if len(args.workers) > 1:
        other = {seed: run["streams"][args.workers[1]] for seed, run in runs.items()}
        header, rows = worker_table(one, other, args.workers[:2])
        print(f"\n{arch}, requests to alarm with {args.workers[1]} workers against 1:\n")
        print(markdown(header, rows))
    header, rows = false_alarm_table({seed: run["false_alarms"] for seed, run in runs.items()})
    if rows:
        print(f"\n{arch}, the clean test split replayed through the monitor alone (all seeds):\n")
        print(markdown(header, rows))
    print(f"\nload average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="*", default=["mlp", "cnn"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench-out/shift"))
    parser.add_argument("--reuse", action="store_true", help="serve models already trained")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clean-requests", type=int, default=5000)
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--false-alarm-replay", type=int, default=1_000_000, help="per seed")
    parser.add_argument("--check-every", type=int, help="the servers' --shift-check-every")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for arch in args.archs:
        runs = {seed: run_seed(arch, seed, args) for seed in args.seeds}
        print_arch(arch, runs, args)


if __name__ == "__main__":
    main()
