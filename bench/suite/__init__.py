"""`foldserve bench`: the benchmark suite, the yardstick of foldserve's performance work.

In one run, side by side, each in its own process: the echo floor (`bench.baselines.echo`: canned
replies on foldserve's own server stack), the bare model server (`bench.baselines.bare_server`)
and `foldserve serve` (once per `--workers` count). Load comes from nghttp2's `h2load`, a C
client sending prebuilt gRPC frames. One module per concept:

- `plan`: what a run measures (the full and the short preset, the flags);
- `servers`: the server processes; `workloads`: the request bodies and their check;
- `h2load`: the load generator; `cpu`: CPU accounting from /proc; `measure`: one measurement;
- `rounds`: every measurement, round after round, servers in rotating order;
- `ort_alone`: the folded vs the BN-kept model in onnxruntime alone;
- `stats`, `results`: medians, spreads, round-by-round ratios, the targets;
- `report`, `plots`: the Markdown report and the PNG plots; `suite`: the whole run.
"""

from __future__ import annotations

import argparse


def run_bench(args: argparse.Namespace) -> int:
    """Run the suite for parsed `foldserve bench` arguments; return the exit code."""
    # Imported here: the parser imports `plan` from this package for every `foldserve` command,
    # and `foldserve health` must not pay for onnxruntime and grpc's import.
    from foldserve.bench.suite.suite import run_bench as run

    return run(args)
