"""`foldserve lab`, registered into the `foldserve` command (entry point `foldserve.commands`).

Registration imports nothing heavy; torch and matplotlib load only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `lab` subcommand to the root parser."""
    lab = subparsers.add_parser(
        "lab",
        help="run seeded BatchNorm experiments; write PNG plots and a Markdown report",
        description="Measure why BatchNorm works on the digits data: learning speed, "
        "distribution stability, Santurkar's noisy BN and smoothness, mini-batch noise and "
        "regularization, test-time statistics and folding, covariate shift. Writes report.md, "
        "results.json and PNG figures into --out. About 3.5 minutes of CPU time on one core "
        "(longer on a busy machine); --quick runs every experiment small (about 20 s), for "
        "smoke tests.",
    )
    lab.add_argument("--out", type=Path, required=True, help="output directory")
    lab.add_argument("--quick", action="store_true", help="small sizes: seconds, not minutes")
    lab.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: these networks are too small for more to help)",
    )
    lab.set_defaults(func=_run_lab)


def _run_lab(args: argparse.Namespace) -> int:
    if args.threads < 1:
        print("foldserve lab: --threads must be at least 1", file=sys.stderr)
        return 2
    try:
        from foldserve.training.lab.config import FULL, QUICK
        from foldserve.training.lab.run import run_lab
    except ImportError as exc:
        sys.exit(
            f"foldserve: the lab needs the train extra (pip install 'foldserve[train]'): {exc}"
        )
    started = time.perf_counter()
    results = run_lab(QUICK if args.quick else FULL, args.out, args.threads)
    meta = results["meta"]
    print(
        f"lab ({meta['config']['name']}): {time.perf_counter() - started:.1f} s in all; "
        f"load average {meta['load_average_before'][0]} before, "
        f"{meta['load_average_after'][0]} after"
    )
    return 0
