"""`foldserve shift-eval --adapt`: does re-estimating the BN statistics on a shifted stream
(`foldserve adapt`) answer the shift? Labels are used only to score.

Each stream of the evaluation (`streams.digits_streams`) is made twice from the model's own
digits split: from its training and validation images (the *adaptation* part: the stream's
first `--adapt-examples`, shuffled, unlabeled) and from its test images (the *scored* part, never
seen in training). Per stream: the serving model's accuracy and the adapted model's on the scored
part, the adaptation's wall time, and what an operator sees without labels: the adapted model's
agreement with the serving one and both models' mean prediction entropy on the adaptation
sample. With several models (seeds), each model's table, then the worst seed per stream.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from foldserve.bench.shift_eval.streams import Stream, digits_streams
from foldserve.core.adapt import adapt_model
from foldserve.core.adapt.estimate import run_graph
from foldserve.core.loading import load_model
from foldserve.core.model import Model
from foldserve.datasets import load_dataset, split_dataset


@dataclass(frozen=True)
class AdaptRow:
    """One stream's result for one model (accuracies on the scored part)."""

    model: str
    stream: str
    serving: float
    adapted: float
    seconds: float
    agreement: float
    entropy_serving: float
    entropy_adapted: float


def model_split(model: Model) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train+val images, labels, test images, labels) of the split the model was trained on."""
    split = model.training.training_metrics.get("split", {}) if model.training else {}
    parts = split_dataset(
        load_dataset("digits"),
        int(split.get("seed", 0)),
        float(split.get("val_fraction", 0.15)),
        float(split.get("test_fraction", 0.2)),
    )
    pool_x = np.concatenate([parts.train.features, parts.val.features])
    pool_y = np.concatenate([parts.train.labels, parts.val.labels])
    return pool_x, pool_y, parts.test.features, parts.test.labels


def _accuracy(data: bytes, model: Model, stream: Stream) -> float:
    classifier = model.classifier
    inputs = stream.features.reshape(-1, *classifier.example_shape)
    (logits,) = run_graph(data, classifier.input.name, inputs, [classifier.logits])
    return float((logits.argmax(1) == stream.labels).mean())


def evaluate_model(path: Path, examples: int, seed: int, names: list[str] | None) -> list[AdaptRow]:
    """Every stream's row for the model at `path`."""
    model = load_model(path, monitor=False)
    source = path.read_bytes()
    pool_x, pool_y, test_x, test_y = model_split(model)
    fitting = digits_streams(pool_x, pool_y, seed=seed)
    scored = digits_streams(test_x, test_y, seed=seed + 1)
    rows = []
    for fit, score in zip(fitting, scored, strict=True):
        if names and fit.name not in names:
            continue
        order = np.random.default_rng(seed).permutation(len(fit.labels))[:examples]
        sample = fit.features[order].reshape(-1, *model.classifier.example_shape)
        started = time.perf_counter()
        adapted = adapt_model(model, sample, fit.name, reference=False)
        seconds = time.perf_counter() - started
        record = adapted.record
        serving, after = _accuracy(source, model, score), _accuracy(adapted.data, model, score)
        signals = (record.agreement, record.entropy_source, record.entropy_adapted)
        rows.append(AdaptRow(str(path), fit.name, serving, after, seconds, *signals))
        print(f"  {path}: {fit.name} adapted in {seconds:.2f} s", file=sys.stderr)
    return rows


HEADER = (
    f"{'stream':<22} {'serving':>7} {'adapted':>7} {'change':>7} {'agree':>6} "
    f"{'H serve':>7} {'H adapt':>7} {'adapt s':>7}"
)


def print_rows(title: str, rows: list[AdaptRow], out) -> None:
    print(title, file=out)
    print(HEADER, file=out)
    for r in rows:
        print(
            f"{r.stream:<22} {r.serving:>7.3f} {r.adapted:>7.3f} {r.adapted - r.serving:>+7.3f} "
            f"{r.agreement:>6.3f} {r.entropy_serving:>7.3f} {r.entropy_adapted:>7.3f} "
            f"{r.seconds:>7.2f}",
            file=out,
        )


@dataclass(frozen=True)
class Worst:
    """One stream over several models (seeds): the worst of each measure."""

    stream: str
    below_clean: float  # adapted − that model's clean serving accuracy, the lowest
    below_serving: float  # adapted − serving on the stream, the lowest
    serving: float  # the lowest serving accuracy
    agreement: float  # the lowest
    entropy_adapted: float  # the highest
    seconds: float  # the longest adaptation
    model: str  # the model of `below_clean`


def worst(per_model: list[list[AdaptRow]]) -> list[Worst]:
    """Per stream, the worst over the models (seeds) of each measure."""
    clean = [next(r for r in rows if r.stream == "clean").serving for rows in per_model]
    table = []
    for streams in zip(*per_model, strict=True):
        gaps = [r.adapted - c for r, c in zip(streams, clean, strict=True)]
        table.append(
            Worst(
                streams[0].stream, min(gaps), min(r.adapted - r.serving for r in streams),
                min(r.serving for r in streams), min(r.agreement for r in streams),
                max(r.entropy_adapted for r in streams), max(r.seconds for r in streams),
                streams[int(np.argmin(gaps))].model,
            )
        )  # fmt: skip
    return table


def print_worst(rows: list[Worst], out) -> None:
    print("the worst model (seed) per stream and measure", file=out)
    print(
        f"{'stream':<22} {'vs clean':>8} {'vs serving':>10} {'serving':>7} {'agree':>6} "
        f"{'H adapt':>7} {'adapt s':>7}  model (vs clean)",
        file=out,
    )
    for r in rows:
        print(
            f"{r.stream:<22} {r.below_clean:>+8.3f} {r.below_serving:>+10.3f} {r.serving:>7.3f} "
            f"{r.agreement:>6.3f} {r.entropy_adapted:>7.3f} {r.seconds:>7.2f}  {r.model}",
            file=out,
        )


def run_adapt_eval(args: argparse.Namespace, out=sys.stdout) -> int:
    """Run `foldserve shift-eval --adapt` for every `--model`."""
    paths = [Path(p) for p in args.model]
    names = args.streams or None
    if names and "clean" not in names:
        names = ["clean", *names]
    per_model = [evaluate_model(p, args.adapt_examples, args.seed, names) for p in paths]
    if args.format == "json":
        payload = {
            str(p): [asdict(r) for r in rows] for p, rows in zip(paths, per_model, strict=True)
        }
        print(json.dumps(payload), file=out)
        return 0
    for path, rows in zip(paths, per_model, strict=True):
        print_rows(f"{path}: adapted on {args.adapt_examples} examples per stream", rows, out)
        print(file=out)
    if len(paths) > 1:
        print_worst(worst(per_model), out)
    return 0
