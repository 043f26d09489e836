"""foldserve at scale: a repository of many small models, and large model-zoo graphs.

    foldserve repository-scale [--models 50] [--large resnet50,vgg19] [--rounds 5]
        [--seconds 3] [--in-flight 1,32] [--protocols grpc,rest] [--workers 1]

Writes (at run time, nothing downloaded) `--models` small MLPs and each `--large` graph of the
`onnx` package's model zoo with materialized weights (`scale_models`), then in each of
`--rounds` rounds starts `foldserve serve --model-repository` (`scale_server`) on:

1. the small models in `explicit` mode, loaded one at a time by a client's RepositoryModelLoad:
   the time of each and the resident memory (RSS) each adds to the server;
2. each large model the same way, alone in its server: load time, RSS added, peak RSS during
   the load, then one call at a time for `--large-seconds` (p50 latency);
3. for each `--workers` count, an empty server and one that loads every small model at start
   (mode none): the time from starting the process until every model is ready, and the RSS;
   then V2 inference at each `--in-flight`, over each protocol, spread round-robin over every
   model and aimed at one model only, in alternating order (`spread_load`): calls/s, p50/p99
   latency, server and client CPU per call, and spread/one ratios taken round by round; the RSS
   after that traffic.

Prints Markdown tables of the medians (min–max) over the rounds; `--json` keeps every round.
Exits 1 when a call failed or a model never answered.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from foldserve.bench.scale_models import ServedModel, write_large_model, write_small_models
from foldserve.bench.scale_options import add_arguments
from foldserve.bench.scale_report import ONE, SPREAD, Figures, print_tables
from foldserve.bench.scale_server import serving
from foldserve.bench.spread_load import GRPC, REST, prepare, run_load

MIB = 2**20
WARMUP_SECONDS = 0.5  # before each load, untimed (at most as long as the load itself)


def measure_round(args, repos: dict[str, Path], small, large, round_: int, figures: Figures):
    """One round: models loaded one at a time, each large model, then for every worker count
    the empty server and the small models under load."""
    _one_at_a_time(repos["small"], small, figures)
    for model, _ in large:
        _large_model(args, repos[model.name], model, figures)
    for workers in args.workers:
        with serving(repos["empty"], (), workers, explicit=True) as empty:
            figures.add((workers, "empty", "ready_s"), empty.ready_s)
            figures.add((workers, "empty", "rss_mb"), empty.rss_bytes / MIB)
        _small_models(args, repos["small"], small, workers, round_, figures)


def _one_at_a_time(repository: Path, small: list[ServedModel], figures: Figures) -> None:
    """Explicit mode, one process: each small model loaded by a client's RepositoryModelLoad,
    the time of each, and the server's RSS after the first and after the last."""
    with serving(repository, (), 1, explicit=True) as server:
        first_s = server.load(small[0].name)
        first_rss = server.rss_now()
        others_s = [server.load(model.name) for model in small[1:]]
        last_rss = server.rss_now()
    figures.add(("first small", "load_ms"), first_s * 1e3)
    figures.add(("first small", "rss_mb"), (first_rss - server.rss_bytes) / MIB)
    if others_s:
        figures.add(("other small", "load_ms"), statistics.median(others_s) * 1e3)
        figures.add(("other small", "rss_mb"), (last_rss - first_rss) / len(others_s) / MIB)
    figures.add(("all small", "load_ms"), (first_s + sum(others_s)) * 1e3)


def _large_model(args, repository: Path, model: ServedModel, figures: Figures) -> None:
    """Explicit mode, one process: the large model loaded by RepositoryModelLoad (its time, the
    RSS it adds, the peak RSS during the load), then called one call at a time."""
    key = ("large", model.name)
    with serving(repository, (), 1, explicit=True) as server:
        figures.add((*key, "load_ms"), server.load(model.name) * 1e3)
        figures.add((*key, "rss_mb"), (server.rss_now() - server.rss_bytes) / MIB)
        figures.add((*key, "peak_mb"), (server.peak_rss_bytes() - server.rss_bytes) / MIB)
        call = prepare(model.name, model.input_name, model.example())
        port = server.server.port
        warmup = min(WARMUP_SECONDS, args.large_seconds)
        result = run_load("127.0.0.1", port, GRPC, [call], 1, args.large_seconds, warmup)
    figures.check(result, [model.name], f"{model.name}, one call at a time")
    figures.add((*key, "p50_ms"), result.figures()["p50_ms"])


def _small_models(args, repository, small, workers, round_, figures) -> None:
    """Mode none: every small model loaded at start; then the load, on one model and spread
    over all of them, in an order that alternates round by round."""
    names = [m.name for m in small]
    calls = [prepare(m.name, m.input_name, m.example(seed=i)) for i, m in enumerate(small)]
    targets = {ONE: calls[:1], SPREAD: calls}
    order = [ONE, SPREAD] if round_ % 2 == 0 else [SPREAD, ONE]
    with serving(repository, names, workers) as server:
        figures.add((workers, "small", "ready_s"), server.ready_s)
        figures.add((workers, "small", "rss_mb"), server.rss_bytes / MIB)
        ports = {GRPC: server.server.port, REST: server.server.http_port}
        for protocol in args.protocols:
            for in_flight in args.in_flight:
                for target in order:
                    result = run_load(
                        "127.0.0.1", ports[protocol], protocol, targets[target], in_flight,
                        args.seconds, min(WARMUP_SECONDS, args.seconds), server.cpu_seconds,
                    )  # fmt: skip
                    answering = names if target == SPREAD else names[:1]
                    figures.check(result, answering, f"{protocol} {in_flight} in flight {target}")
                    key = (workers, protocol, in_flight, target)
                    for name, value in result.figures().items():
                        figures.add((*key, name), value)
                    figures.add((*key, "models_answered"), len(result.answered))
        figures.add((workers, "small", "rss_after_traffic_mb"), server.rss_now() / MIB)


def _write_repositories(root: Path, args) -> tuple[dict[str, Path], list[ServedModel], list]:
    repos = {"empty": root / "empty", "small": root / "small"}
    repos["empty"].mkdir()
    small = write_small_models(repos["small"], args.models)
    large = []
    for name in args.large:
        repos[name] = root / f"large-{name}"
        large.append(write_large_model(repos[name], name))
    return repos, small, large


def run(args: argparse.Namespace) -> int:
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="foldserve-scale-") as scratch:
        repos, small, large = _write_repositories(Path(scratch), args)
        for round_ in range(args.rounds):
            measure_round(args, repos, small, large, round_, figures)
    print_tables(figures, args, [(model.name, size) for model, size in large])
    if args.json:
        Path(args.json).write_text(json.dumps(figures.as_json(args), indent=1))
    for problem in figures.problems:
        print(f"FAILED: {problem}")
    return 1 if figures.problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
