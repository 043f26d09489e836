"""The flags of `foldserve repository-scale`, declared once for the command and for
`python -m foldserve.bench.repository_scale`. Nothing heavy is imported here: every `foldserve`
command registers every plugin's flags for the top-level help.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `foldserve repository-scale` to `parser`."""
    add = parser.add_argument
    add("--models", type=_positive, default=50, help="small models in the repository (default 50)")
    add(
        "--large",
        type=_zoo_names,
        default=["resnet50", "vgg19"],
        help="graphs of the onnx package's model zoo (onnx/backend/test/data/light) to "
        "materialize and serve, each alone, comma-separated, or none (default resnet50,vgg19)",
    )
    add("--rounds", type=_positive, default=5, help="rounds (default 5)")
    add("--seconds", type=float, default=3.0, help="seconds per load, after a warm-up (default 3)")
    add("--in-flight", type=_int_list, default=[1, 32], help="calls in flight (default 1,32)")
    add(
        "--protocols",
        type=_protocols,
        default=["grpc", "rest"],
        help="V2 over grpc, rest or both (default grpc,rest)",
    )
    add("--workers", type=_int_list, default=[1], help="server worker counts, e.g. 1,2 (default 1)")
    add(
        "--large-seconds",
        type=float,
        default=2.0,
        help="seconds of calls to each large model (default 2)",
    )
    add("--json", metavar="PATH", help="also write every round's figures here")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of at least 1")
    return int(text)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated whole numbers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers of at least 1")
    return values


def _protocols(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    if not names or set(names) - {"grpc", "rest"}:
        raise argparse.ArgumentTypeError(f"{text!r}: grpc, rest or grpc,rest")
    return names


def _zoo_names(text: str) -> list[str]:
    from foldserve.bench.scale_models import light_models

    names = [part for part in text.split(",") if part and part != "none"]
    unknown = sorted(set(names) - set(light_models()))
    if unknown:
        raise argparse.ArgumentTypeError(f"{unknown}: the onnx package has {light_models()}")
    return names
