"""`foldserve fold` on the test graphs, and the digits MLP against foldserve's own export.

    .venv/bin/python bench/onnx_fold.py [--rounds 7] [--calls 3000] [--model-dir models/mlp]

Prints two Markdown tables:

1. every graph of `tests/training/fold_cases.py`: BatchNormalization nodes before and after,
   the largest |folded − input| (and relative to the output scale), and onnxruntime batch-1 time
   before and after (median over rounds; each round times both graphs, in alternating order) and
   the median of the per-round ratios after / before;
2. the digits MLP (trained here, or the one in --model-dir), three files side by side: exported
   by torch with its BNs kept, that file after `foldserve fold`, and foldserve's own export
   (`foldserve train`): medians of the per-round medians, their spread (min–max), and the
   ratio folded / foldserve's export taken round by round.

Timing: one onnxruntime session per file, one intra-op thread (as the server runs them), all
optimizations on, one example per call, `time.perf_counter_ns` around each `run`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests/ package

from foldserve.core.loading import session_options
from foldserve.runtime import ort
from foldserve.training.onnx_fold import OnnxFoldError, fold_file
from foldserve.training.onnx_fold.verify import random_feeds
from tests.training.fold_cases import CASES, FoldCase


def session(path: Path) -> ort.InferenceSession:
    """A session with the options foldserve serves with."""
    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def one_example(path: Path) -> dict[str, np.ndarray]:
    """Random inputs with a batch of one where the batch axis is symbolic."""
    model = onnx.load(str(path), load_external_data=False)
    feeds = random_feeds(model)
    symbolic = {
        value.name
        for value in model.graph.input
        if value.type.tensor_type.shape.dim and not value.type.tensor_type.shape.dim[0].dim_value
    }
    return {k: v[:1] if k in symbolic else v for k, v in feeds.items()}


def time_rounds(paths: list[Path], rounds: int, calls: int) -> list[list[float]]:
    """Per file, the median µs per `run` of each round; the files take turns within a round,
    in an order that rotates from round to round, so load from elsewhere hits them alike."""
    sessions = [session(p) for p in paths]
    feeds = one_example(paths[0])
    for s in sessions:  # warm up: first runs allocate and page in
        for _ in range(max(50, calls // 10)):
            s.run(None, feeds)
    medians: list[list[float]] = [[] for _ in paths]
    for r in range(rounds):
        order = list(range(len(paths)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            run, samples = sessions[i].run, []
            for _ in range(calls):
                start = time.perf_counter_ns()
                run(None, feeds)
                samples.append(time.perf_counter_ns() - start)
            medians[i].append(statistics.median(samples) / 1000)
    return medians


def case_row(case: FoldCase, work: Path, rounds: int, calls: int) -> str:
    source = case.write(work / "in.onnx")
    target = work / "out.onnx"
    try:
        result = fold_file(source, target)
    except OnnxFoldError as exc:
        reason = str(exc).split(": ")[-1]
        return f"| {case.name} | {case.source} | {case.before} | – | – | – | – | – | {reason} |"
    before, after = time_rounds([source, target], rounds, calls)
    ratio = statistics.median(a / b for a, b in zip(after, before, strict=True))
    check = result.verification
    left = "; ".join(sorted({_short(x.reason) for x in result.left})) or ""
    return (
        f"| {case.name} | {case.source} | {result.bn_before} | {result.bn_after} | "
        f"{check.max_abs_error:.1e} ({check.max_scaled_error:.1e}) | "
        f"{statistics.median(before):.1f} | {statistics.median(after):.1f} | {ratio:.2f} | "
        f"{left} |"
    )


def _short(reason: str) -> str:
    for phrase, short in [
        ("training_mode=1", "training_mode=1"),
        ("is not a constant", "statistics are graph inputs"),
        ("readers", "input shared with the shortcut, feeds ReLU"),
        ("constant output shift", "before a ConvTranspose, after a ReLU"),
    ]:
        if phrase in reason:
            return short
    return reason


def graphs_table(rounds: int, calls: int) -> None:
    print("| graph | built by | BN before | BN after | max error (of scale) | µs before | "
          "µs after | after / before | left, why |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for case in CASES:
        with tempfile.TemporaryDirectory() as work:
            print(case_row(case, Path(work), rounds, calls), flush=True)


def digits_mlp(model_dir: Path | None, work: Path) -> tuple[Path, Path]:
    """foldserve's own export of a trained digits MLP, and the same network exported by torch
    with its BNs kept (logits and probabilities, as foldserve's file has)."""
    import torch

    from foldserve.training.models import ModelSpec, build_model
    from foldserve.training.pipeline import TrainConfig, run_training
    from foldserve.training.train import FitSettings
    from tests.training.torch_graphs import LEGACY, export

    if model_dir is None:
        model_dir = work / "mlp"
        run_training(TrainConfig(out=model_dir, fit=FitSettings(progress=False)))
    saved = torch.load(model_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    network = build_model(ModelSpec.from_dict(saved["spec"]))
    network.load_state_dict(saved["state_dict"])

    class WithProbabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.network(x)
            return logits, torch.softmax(logits, dim=1)

    kept = export(
        WithProbabilities().eval(),
        saved["check_inputs"][:2],
        work / "bn_kept.onnx",
        LEGACY,
        input_names=["input"],
        output_names=["logits", "probabilities"],
    )
    return model_dir / "model.onnx", kept


def acceptance(model_dir: Path | None, rounds: int, calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        own, kept = digits_mlp(model_dir, work)
        folded = work / "folded.onnx"
        result = fold_file(kept, folded)
        paths = [kept, folded, own]
        medians = time_rounds(paths, rounds, calls)
    names = ["torch export, BN kept", "that file after `foldserve fold`", "foldserve's own export"]
    bn = [result.bn_before, result.bn_after, 0]
    check = result.verification
    error = f"{check.max_abs_error:.1e}, {check.max_scaled_error:.1e} of the output scale"
    print(f"\ndigits MLP, batch 1, {rounds} rounds × {calls} calls "
          f"(max |folded − BN kept| = {error})\n")  # fmt: skip
    print("| file | BN nodes | median µs | spread (min–max of round medians) |")
    print("| --- | ---: | ---: | --- |")
    for name, count, values in zip(names, bn, medians, strict=True):
        print(f"| {name} | {count} | {statistics.median(values):.2f} | "
              f"{min(values):.2f}–{max(values):.2f} |")  # fmt: skip
    ratios = [f / o for f, o in zip(medians[1], medians[2], strict=True)]
    kept_ratios = [k / f for k, f in zip(medians[0], medians[1], strict=True)]
    print(f"\nfolded / foldserve's export, per round: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}); "
          f"BN kept / folded: median {statistics.median(kept_ratios):.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000, help="calls per file per round (MLP)")
    parser.add_argument("--graph-calls", type=int, default=300, help="calls per round (graphs)")
    parser.add_argument("--model-dir", type=Path, help="a trained digits MLP (checkpoint.pt)")
    parser.add_argument("--skip-graphs", action="store_true", help="only the digits MLP")
    args = parser.parse_args()
    if not args.skip_graphs:
        graphs_table(args.rounds, args.graph_calls)
    acceptance(args.model_dir, args.rounds, args.calls)


if __name__ == "__main__":
    main()
