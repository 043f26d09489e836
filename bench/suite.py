"""Sequential latency: bare gRPC echo servers (sync and asyncio) vs foldserve Predict.

    .venv/bin/python bench/latency.py --model models/default/model.onnx [--runs 5 --calls 2000]

Same as `foldserve bench`; prints per-run p50/p99 and the medians, with foldserve's p50 as a
ratio of the sync echo server's. Needs foldserve installed (`make venv` does).
"""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
