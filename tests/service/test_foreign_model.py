"""Models foldserve did not train, served from their graph over real sockets: V2 ModelInfer with
several inputs and every datatype, ModelMetadata from the graph, Predict for classifier-shaped
graphs (FAILED_PRECONDITION otherwise) and DescribeModel."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from foldserve._proto.foldserve.v1 import predictor_pb2, predictor_pb2_grpc
from foldserve._proto.inference import grpc_predict_v2_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from foldserve.core.loading import load_model
from tests.service.conftest import ServeFactory
from tests.service.foreign_files import (
    ELEMENT_TYPES,
    write_every_datatype_model,
    write_logits_model,
    write_masked_model,
    write_sequence_model,
)

Tensor = pb.ModelInferRequest.InferInputTensor
Requested = pb.ModelInferRequest.InferRequestedOutputTensor
INVALID = grpc.StatusCode.INVALID_ARGUMENT
X = np.arange(8, dtype=np.float32).reshape(2, 4) - 3.5
MASK = np.array([[True, False, True, True], [False, False, True, False]])
TYPED_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
}  # fmt: skip


def v2_stub(served) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(served.channel)


def raw_request(arrays: dict[str, tuple[str, np.ndarray]], **fields) -> pb.ModelInferRequest:
    tensors = [Tensor(name=n, datatype=d, shape=a.shape) for n, (d, a) in arrays.items()]
    raw = [np.ascontiguousarray(a, a.dtype.newbyteorder("<")).tobytes() for _, a in arrays.values()]
    return pb.ModelInferRequest(
        model_name="foldserve", inputs=tensors, raw_input_contents=raw, **fields
    )


def typed_request(arrays: dict[str, tuple[str, np.ndarray]], **fields) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="foldserve", **fields)
    for name, (datatype, array) in arrays.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(array.ravel().tolist())
    return request


def masked_inputs(x: np.ndarray = X, mask: np.ndarray = MASK) -> dict:
    return {"x": ("FP32", x), "mask": ("BOOL", mask)}


def outputs_of(reply: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The reply's outputs as arrays, raw or typed."""
    found = {}
    for index, output in enumerate(reply.outputs):
        dtype = np.dtype(ELEMENT_TYPES[output.datatype][1])
        if reply.raw_output_contents:
            data = np.frombuffer(reply.raw_output_contents[index], dtype.newbyteorder("<"))
        else:
            data = np.array(getattr(output.contents, TYPED_FIELDS[output.datatype]), dtype)
        found[output.name] = data.astype(dtype).reshape(list(output.shape))
    return found


@pytest.fixture
def masked(tmp_path: Path, serve: ServeFactory):
    return serve(write_masked_model(tmp_path / "model.onnx"))


def expected_masked() -> dict[str, np.ndarray]:
    return {"out": np.where(MASK, X, 0).astype(np.float32), "count": MASK.sum(axis=1)}


def test_two_inputs_raw_and_typed(masked) -> None:
    stub = v2_stub(masked)
    raw = stub.ModelInfer(raw_request(masked_inputs(), id="r1"), timeout=5)
    assert reply_layout(raw) == [("out", "FP32", [2, 4]), ("count", "INT64", [2])]
    assert len(raw.raw_output_contents) == 2 and raw.id == "r1"
    typed = stub.ModelInfer(typed_request(masked_inputs()), timeout=5)
    assert len(typed.raw_output_contents) == 2  # every reply raw, as Triton answers
    for reply in (raw, typed):
        got = outputs_of(reply)
        for name, want in expected_masked().items():
            np.testing.assert_array_equal(got[name], want)
    # Inputs in any order; requested outputs by name, in request order.
    swapped = {"mask": ("BOOL", MASK), "x": ("FP32", X)}
    reply = stub.ModelInfer(raw_request(swapped, outputs=[Requested(name="count")]), timeout=5)
    assert reply_layout(reply) == [("count", "INT64", [2])]
    np.testing.assert_array_equal(outputs_of(reply)["count"], [3, 1])


def reply_layout(reply: pb.ModelInferResponse) -> list[tuple[str, str, list[int]]]:
    return [(o.name, o.datatype, list(o.shape)) for o in reply.outputs]


def _refused(stub, request: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=5)
    assert caught.value.code() == INVALID, caught.value.details()
    assert message in caught.value.details()


BAD = [
    ("missing input", {"x": ("FP32", X)}, "inputs: input(s) ['mask'] missing"),
    ("unknown input", {**masked_inputs(), "extra": ("FP32", X)},
     "inputs[2].name: unknown input 'extra'; the model's inputs are ['x', 'mask']"),
    ("datatype", {"x": ("FP32", X), "mask": ("FP32", MASK.astype(np.float32))},
     "inputs[1].datatype: input 'mask' is BOOL, got 'FP32'"),
    ("fixed dim", masked_inputs(X[:, :3], MASK[:, :3]),
     "inputs[0].shape: input 'x' has shape [dynamic, 4] (dynamic: any size >= 1), got [2, 3]"),
    ("rank", masked_inputs(X.reshape(-1), MASK),
     "inputs[0].shape: input 'x' has shape [dynamic, 4]"),
    ("empty batch", masked_inputs(X[:0], MASK[:0]), "got [0, 4]"),
    ("nan", masked_inputs(np.where(MASK, np.nan, X).astype(np.float32)),
     "inputs[0] values[0]: nan is not finite"),
]  # fmt: skip


@pytest.mark.parametrize(("inputs", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_inputs_are_refused_naming_the_field(masked, inputs: dict, message: str) -> None:
    stub = v2_stub(masked)
    _refused(stub, raw_request(inputs), message)
    _refused(stub, typed_request(inputs), message)


def test_bad_data_is_refused_naming_the_field(masked) -> None:
    stub = v2_stub(masked)
    twice = raw_request(masked_inputs())
    twice.inputs.append(twice.inputs[0])
    twice.raw_input_contents.append(twice.raw_input_contents[0])
    _refused(stub, twice, "inputs[2].name: input 'x' given twice")
    short = raw_request(masked_inputs())
    short.raw_input_contents.pop()
    _refused(stub, short, "raw_input_contents: expected 2 entries (one per input")
    odd_bool = raw_request(masked_inputs())
    odd_bool.raw_input_contents[1] = b"\x02" + odd_bool.raw_input_contents[1][1:]
    _refused(stub, odd_bool, "raw_input_contents[1][0]: byte 2 is not a BOOL (0 or 1)")
    sizes = raw_request(masked_inputs())
    sizes.raw_input_contents[0] = sizes.raw_input_contents[0][:-4]
    _refused(stub, sizes, "raw_input_contents[0]: expected 32 bytes (8 FP32 values")
    wrong_field = typed_request(masked_inputs())
    wrong_field.inputs[1].contents.int_contents.extend([1] * 8)
    _refused(stub, wrong_field, "inputs[1].contents: BOOL data belongs in bool_contents")
    no_data = typed_request(masked_inputs())
    no_data.inputs[1].ClearField("contents")
    _refused(stub, no_data, "inputs[1]: no data for input 'mask'")
    both = raw_request(masked_inputs())
    both.inputs[0].contents.fp32_contents.extend(X.ravel().tolist())
    _refused(stub, both, "inputs[0].contents: data given in both contents and raw_input_contents")
    _refused(
        stub,
        raw_request(masked_inputs(), outputs=[Requested(name="logits")]),
        "outputs[0].name: unknown output 'logits'; expected one of ['out', 'count']",
    )


def every_datatype(names) -> dict[str, tuple[str, np.ndarray]]:
    """Inputs `x_<DATATYPE>` [2, 3], with each integer type's extremes."""
    rng = np.random.default_rng(0)
    arrays = {}
    for name in names:
        dtype = np.dtype(ELEMENT_TYPES[name][1])
        if dtype.kind == "b":
            values = np.array([[True, False, True], [False, False, True]])
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            values = np.array([[info.min, info.max, 0], [1, info.max - 1, info.min + 1]], dtype)
        else:
            values = rng.normal(size=(2, 3)).astype(dtype)
        arrays[f"x_{name}"] = (name, values)
    return arrays


def check_round_trip(reply: pb.ModelInferResponse, arrays: dict) -> None:
    got = outputs_of(reply)
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [
        (n.replace("x_", "y_"), d, [2, 3]) for n, (d, _) in arrays.items()
    ]
    for name, (_, values) in arrays.items():
        out = got[name.replace("x_", "y_")]
        assert out.dtype == values.dtype
        np.testing.assert_array_equal(out, values)


def test_every_datatype_round_trips_raw(tmp_path: Path, serve: ServeFactory) -> None:
    stub = v2_stub(serve(write_every_datatype_model(tmp_path / "model.onnx")))
    arrays = every_datatype(ELEMENT_TYPES)
    check_round_trip(stub.ModelInfer(raw_request(arrays), timeout=5), arrays)
    # A typed request with an FP16 input: refused, FP16 has no typed field (as in Triton).
    typed = typed_request({k: v for k, v in arrays.items() if v[0] != "FP16"})
    typed.inputs.add(name="x_FP16", datatype="FP16", shape=[2, 3]).contents.fp32_contents.extend(
        [0.0] * 6
    )
    _refused(stub, typed, "inputs[11].contents: FP16 data goes in raw_input_contents only")


def test_every_typed_datatype_round_trips_typed(tmp_path: Path, serve: ServeFactory) -> None:
    names = [n for n in ELEMENT_TYPES if n != "FP16"]
    stub = v2_stub(serve(write_every_datatype_model(tmp_path / "model.onnx", names)))
    arrays = every_datatype(names)
    reply = stub.ModelInfer(typed_request(arrays), timeout=5)
    assert len(reply.raw_output_contents) == len(reply.outputs)
    check_round_trip(reply, arrays)
    too_big = typed_request(
        {
            "x_INT8": ("INT8", np.full((2, 3), 0, np.int8)),
            **{k: v for k, v in arrays.items() if k != "x_INT8"},
        }
    )
    too_big.inputs[0].contents.int_contents[4] = 300
    _refused(stub, too_big, "inputs[0].contents.int_contents[4]: 300 is out of range for INT8")


def test_fp16_outputs_make_a_typed_reply_raw(tmp_path: Path, serve: ServeFactory) -> None:
    stub = v2_stub(serve(write_every_datatype_model(tmp_path / "model.onnx", ["FP16"])))
    arrays = every_datatype(["FP16"])
    reply = stub.ModelInfer(raw_request(arrays), timeout=5)
    check_round_trip(reply, arrays)
    assert len(reply.raw_output_contents) == 1


def test_dynamic_dimensions(tmp_path: Path, serve: ServeFactory) -> None:
    stub = v2_stub(serve(write_sequence_model(tmp_path / "model.onnx")))
    for shape in ((2, 5), (1, 7), (3, 1)):
        x = np.ones(shape, np.float32)
        reply = stub.ModelInfer(raw_request({"x": ("FP32", x)}), timeout=5)
        assert reply_layout(reply) == [("total", "FP32", [shape[0]])]
        np.testing.assert_array_equal(outputs_of(reply)["total"], x.sum(axis=1))
    _refused(stub, raw_request({"x": ("FP32", np.ones((2, 0), np.float32))}), "got [2, 0]")
    _refused(stub, raw_request({"x": ("FP32", np.ones((2,), np.float32))}), "got [2]")
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="foldserve"), timeout=5)
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, -1])
    ]


def test_model_metadata_from_the_graph(masked) -> None:
    reply = v2_stub(masked).ModelMetadata(pb.ModelMetadataRequest(name="foldserve"), timeout=5)
    assert (reply.name, list(reply.versions), reply.platform) == (
        "foldserve",
        ["1"],
        "onnxruntime_onnx",
    )
    assert [(t.name, t.datatype, list(t.shape)) for t in reply.inputs] == [
        ("x", "FP32", [-1, 4]),
        ("mask", "BOOL", [-1, 4]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in reply.outputs] == [
        ("out", "FP32", [-1, 4]),
        ("count", "INT64", [-1]),
    ]


def predictor_stub(served) -> predictor_pb2_grpc.PredictorStub:
    return predictor_pb2_grpc.PredictorStub(served.channel)


def test_predict_needs_a_classifier_shaped_model(masked) -> None:
    stub = predictor_stub(masked)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(predictor_pb2.PredictRequest(features=[0.0] * 4), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (
        "model 'foldserve' is not classifier-shaped (2 inputs); use the V2 ModelInfer API"
    )
    [answer] = stub.PredictStream(iter([predictor_pb2.PredictRequest(features=[0.0] * 4)]))
    assert answer.error.status == "FAILED_PRECONDITION"
    description = stub.DescribeModel(predictor_pb2.DescribeModelRequest(), timeout=5)
    assert (description.input_name, list(description.input_shape)) == ("x", [4])
    assert list(description.output_names) == ["out", "count"]
    assert not description.class_labels and not description.shift.enabled


WEIGHTS = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)


def test_predict_on_a_classifier_shaped_model(tmp_path: Path, serve: ServeFactory) -> None:
    path = write_logits_model(tmp_path / "model.onnx", WEIGHTS)
    served = serve(path)
    stub = predictor_stub(served)
    features = np.array([0.5, -1.0, 2.0, 0.0, 1.5], np.float32)
    reply = stub.Predict(predictor_pb2.PredictRequest(features=features.tolist()), timeout=5)
    logits = features @ WEIGHTS
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert reply.label == int(logits.argmax())
    assert reply.class_name == str(int(logits.argmax()))
    np.testing.assert_allclose(reply.probabilities, expected, rtol=1e-5)
    assert (reply.model_name, reply.model_version) == ("foldserve", "1")
    description = stub.DescribeModel(predictor_pb2.DescribeModelRequest(), timeout=5)
    assert (description.input_name, list(description.input_shape)) == ("features", [5])
    assert (description.input_dtype, list(description.class_labels)) == ("float32", ["0", "1", "2"])
    assert description.fold_report.fields["folded"].list_value.values == []
    assert (
        served.sample("foldserve_predictions_total", **{"class": str(int(logits.argmax()))}) == 1.0
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_predict_on_a_classifier_of_another_float_type(
    tmp_path: Path, serve: ServeFactory, dtype: type
) -> None:
    stub = predictor_stub(serve(write_logits_model(tmp_path / "model.onnx", WEIGHTS, dtype=dtype)))
    features = np.array([0.5, -1.0, 2.0, 0.0, 1.5], np.float32)
    reply = stub.Predict(predictor_pb2.PredictRequest(features=features.tolist()), timeout=5)
    logits = features.astype(np.float64) @ WEIGHTS.astype(dtype).astype(np.float64)
    assert reply.label == int(logits.argmax())
    assert len(reply.probabilities) == WEIGHTS.shape[1]


def test_predict_refuses_a_wrong_feature_count(tmp_path: Path, serve: ServeFactory) -> None:
    stub = predictor_stub(serve(write_logits_model(tmp_path / "model.onnx", WEIGHTS)))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(predictor_pb2.PredictRequest(features=[1.0] * 4), timeout=5)
    assert caught.value.code() == INVALID
    assert "features: expected 5 float32 values (shape [5]), got 4" in caught.value.details()


def test_a_probabilities_output_is_used_as_is(tmp_path: Path, serve: ServeFactory) -> None:
    """An [N, C] output whose name holds "prob" is the probabilities; no softmax of it."""
    model = load_model(write_logits_model(tmp_path / "model.onnx", WEIGHTS, "class_probs"))
    classifier = model.classifier
    assert (classifier.logits, classifier.probabilities) == ("class_probs", "class_probs")
    features = np.ones((1, 5), np.float32)
    outputs = model.run_classifier(features)
    assert list(outputs) == ["class_probs"]
    stub = predictor_pb2_grpc.PredictorStub(serve(model).channel)
    reply = stub.Predict(predictor_pb2.PredictRequest(features=features[0].tolist()), timeout=5)
    np.testing.assert_array_equal(reply.probabilities, outputs["class_probs"][0])
