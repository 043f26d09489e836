"""The `foldserve` command.

The serving half owns the command. Other installed parts add subcommands through the
`foldserve.commands` entry-point group (the training half registers `train` and `export` there), so
this module never imports torch or `training/`, and a serving-only install simply lacks them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

Register = Callable[[argparse._SubParsersAction], None]


def _register_plugins(subparsers: argparse._SubParsersAction) -> None:
    for entry in entry_points(group="foldserve.commands"):
        register: Register = entry.load()
        register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    """Build the root parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="foldserve",
        description="Train BatchNorm networks, fold BN away, serve one example at a time over gRPC.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_plugins(subparsers)
    # Serving subcommands (serve, predict, health, bench) register here.
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; each subcommand sets `func(args) -> int` on its parser."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
