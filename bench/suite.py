"""The benchmark suite, as `foldserve bench` runs it (see README, Performance):

    .venv/bin/python bench/suite.py --model models/default/model.onnx \\
        --bn-kept-model models/default/model_bn_kept.onnx [--short] [--workers 1,2]

Prints the targets, every figure beside the echo floor's, the workers and onnxruntime alone;
writes bench.json, bench.md and the plots to --out (default bench-results/). Needs foldserve
installed (`make venv` does) and h2load (`apt-get install nghttp2-client`).
"""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
