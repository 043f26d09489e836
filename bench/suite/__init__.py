"""`foldserve bench`: the benchmark suite, the yardstick of foldserve's performance work.

In one run, side by side, each in its own process: the echo floor (`bench.baselines.echo`: canned
replies) and the bare model server (`bench.baselines.bare_server`), each on every Python gRPC
runtime asked for (sync, asyncio, uvloop), `foldserve serve` (once per `--workers` count) and,
with `--peer mlserver`, Seldon MLServer on the same model. Load comes from nghttp2's `h2load`, a
C client sending prebuilt gRPC frames, and V2 REST bodies over HTTP/1.1. One module per concept:

- `plan`: what a run measures (the full and the short preset, the flags);
- `servers`: the server processes; `lineup`: which came up and what each answers;
- `workloads`, `rest_workloads`: the request bodies (gRPC, V2 REST) and their check;
- `peer`, `mlserver_runtime`: the peer's own venv, settings and custom runtime;
- `h2load`: the load generator; `cpu`: CPU accounting from /proc; `measure`: one measurement;
- `rounds`: every measurement, round after round, servers in rotating order;
- `ort_alone`: the folded vs the BN-kept model in onnxruntime alone;
- `stats`, `results`: medians, spreads, round-by-round ratios, the targets;
- `report`, `report_tables`, `plots`: the Markdown report and the PNG plots; `suite`: the run.
"""

from __future__ import annotations

import argparse


def run_bench(args: argparse.Namespace) -> int:
    """Run the suite for parsed `foldserve bench` arguments; return the exit code."""
    # Imported here: the parser imports `plan` from this package for every `foldserve` command,
    # and `foldserve health` must not pay for onnxruntime and grpc's import.
    from foldserve.bench.suite.suite import run_bench as run

    return run(args)
