"""The folded model against the same network with its BatchNorms kept, in onnxruntime alone.

No server: one `session.run` per batch of 1, 32 and 256 examples, on a session built with the
very options foldserve serves with (taken from the loaded model's own session). The two files
are timed in alternating turns within each round. Beside the times: how many
BatchNormalization nodes each file has, and how many are left once onnxruntime has optimized
the graph (it fuses some, e.g. a BN after a Conv, by itself), and how far the two models'
outputs are apart (they must be the same network).

The BN-kept file comes from `bench/bn_kept_model.py` (a training checkpoint exported without
folding); without one, only the folded model is timed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from foldserve.bench.suite.stats import ratio_spread, spread
from foldserve.contract import PROBABILITIES
from foldserve.core.model import Model
from foldserve.runtime import ort

MIN_RUNS = 20
WARMUP_RUNS = 5
FOLDED, KEPT = "folded", "bn_kept"


def _graph_nodes_message() -> type:
    """ModelProto → graph (7) → node (1) → op_type (4), and nothing else: enough to count a
    file's operators without the `onnx` package, which the serving install lacks."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="bench_onnx_nodes.proto", package="bench_onnx")
    node = file.message_type.add(name="Node")
    node.field.add(name="op_type", number=4, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    graph = file.message_type.add(name="Graph")
    graph.field.add(
        name="node",
        number=1,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".bench_onnx.Node",
    )
    model = file.message_type.add(name="Model")
    model.field.add(
        name="graph",
        number=7,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_OPTIONAL,
        type_name=".bench_onnx.Graph",
    )
    pool = descriptor_pool.DescriptorPool()  # private: no clash with a real `onnx` import
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench_onnx.Model"))


_Model = _graph_nodes_message()


def batchnorm_nodes(path: str | Path) -> int:
    """BatchNormalization nodes in the main graph of an ONNX file."""
    model = _Model.FromString(Path(path).read_bytes())
    return sum(node.op_type == "BatchNormalization" for node in model.graph.node)


def _optimized_batchnorm_nodes(path: str, options: ort.SessionOptions) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            return batchnorm_nodes(options.optimized_model_filepath)
        finally:
            options.optimized_model_filepath = ""


def _timings_us(session: ort.InferenceSession, feeds: dict, seconds: float) -> np.ndarray:
    run, clock = session.run, time.perf_counter
    for _ in range(WARMUP_RUNS):
        run(None, feeds)
    timings: list[float] = []
    end = clock() + seconds
    while len(timings) < MIN_RUNS or clock() < end:
        start = clock()
        run(None, feeds)
        timings.append(clock() - start)
    return np.asarray(timings) * 1e6


def _time_rounds(
    sessions: dict[str, ort.InferenceSession],
    shape: tuple[int, ...],
    batches: Sequence[int],
    seconds: float,
    rounds: int,
) -> dict[str, dict]:
    p50s: dict[tuple[str, int], list[float]] = {}
    rng = np.random.default_rng(0)
    inputs = {b: rng.uniform(0, 16, (b, *shape)).astype(np.float32) for b in batches}
    names = list(sessions)
    for index in range(rounds):
        for batch in batches:
            for name in names[index % len(names) :] + names[: index % len(names)]:
                session = sessions[name]
                feeds = {session.get_inputs()[0].name: inputs[batch]}
                p50 = float(np.median(_timings_us(session, feeds, seconds)))
                p50s.setdefault((name, batch), []).append(p50)
    result: dict[str, dict] = {}
    for batch in batches:
        entry: dict[str, object] = {}
        for name in names:
            values = p50s[(name, batch)]
            entry[name] = {
                "p50_us": spread(values),
                "us_per_example": spread([v / batch for v in values]),
            }
        if KEPT in sessions:
            entry["kept_over_folded"] = ratio_spread(p50s[(KEPT, batch)], p50s[(FOLDED, batch)])
        result[str(batch)] = entry
    return result


def compare(
    folded: Model, kept_path: str | None, batches: Sequence[int], seconds: float, rounds: int
) -> dict[str, object]:
    """Time the folded model (and the BN-kept one, if given) at each batch size.

    Returns:
        {"batches": {"1": {"folded": {"p50_us": spread, "us_per_example": spread}, "bn_kept":
        …, "kept_over_folded": spread}, …}, "bn_nodes": …, "max_abs_difference": float | None}.
    """
    options = folded.session.get_session_options()
    sessions = {FOLDED: folded.session}
    files = {FOLDED: folded.path}
    if kept_path:
        sessions[KEPT] = ort.InferenceSession(
            kept_path, options, providers=["CPUExecutionProvider"]
        )
        files[KEPT] = kept_path
    shape = folded.require_classifier().example_shape
    difference = None
    if KEPT in sessions:
        probe = np.random.default_rng(1).uniform(0, 16, (64, *shape)).astype(np.float32)
        # Probabilities: bounded, so the difference reads the same whatever the logits' scale.
        outputs = [
            s.run([PROBABILITIES], {s.get_inputs()[0].name: probe})[0] for s in sessions.values()
        ]
        difference = float(np.max(np.abs(outputs[0] - outputs[1])))
    return {
        "session_options": {
            "intra_op_num_threads": options.intra_op_num_threads,
            "graph_optimization_level": str(options.graph_optimization_level),
        },
        "files": files,
        "bn_nodes": {
            name: {
                "file": batchnorm_nodes(path),
                "after_ort": _optimized_batchnorm_nodes(path, options),
            }
            for name, path in files.items()
        },
        "max_abs_difference": difference,
        "batches": _time_rounds(sessions, shape, batches, seconds, rounds),
    }
