"""Triton's classification extension over V2 gRPC: a requested output's `classification: k`
parameter answers its top k classes as a BYTES tensor [batch, k] of "value:index[:label]",
typed and raw, with tritonclient.grpc unchanged; every bad k or output INVALID_ARGUMENT naming
`outputs[i].parameters.classification`. Also the ranking and formatting in the core."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper

from foldserve._proto.inference import grpc_predict_v2_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from foldserve.core.classification import top_k
from foldserve.core.errors import RequestError, Status
from tests.service.classes import expected_classes
from tests.service.conftest import Served, ServeFactory
from tests.service.foreign_files import save, value, write_every_datatype_model
from tests.service.string_files import write_words_model
from tests.service.subprocess_server import REPO, env

Tensor = pb.ModelInferRequest.InferInputTensor
Requested = pb.ModelInferRequest.InferRequestedOutputTensor
BATCH = np.random.default_rng(5).normal(size=(4, 64)).astype(np.float32)
LABELS = [f"class_{i}" for i in range(10)]
FIELD = "outputs[1].parameters.classification"


@pytest.fixture(scope="module")
def stub(shared_server: Served) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(shared_server.channel)


def classified(name: str, k: object) -> Requested:
    output = Requested(name=name)
    parameter = output.parameters["classification"]
    if isinstance(k, bool):
        parameter.bool_param = k
    elif isinstance(k, int):
        parameter.int64_param = k
    else:
        parameter.string_param = str(k)
    return output


def request(outputs: list[Requested], raw: bool, batch: np.ndarray = BATCH) -> pb.ModelInferRequest:
    tensor = Tensor(name="input", datatype="FP32", shape=batch.shape)
    if raw:
        return pb.ModelInferRequest(
            model_name="foldserve", inputs=[tensor], outputs=outputs,
            raw_input_contents=[batch.tobytes()],
        )  # fmt: skip
    tensor.contents.fp32_contents.extend(batch.ravel().tolist())
    return pb.ModelInferRequest(model_name="foldserve", inputs=[tensor], outputs=outputs)


def strings_of(reply: pb.ModelInferResponse, index: int) -> list[list[str]]:
    output = reply.outputs[index]
    if reply.raw_output_contents:
        data, values, offset = reply.raw_output_contents[index], [], 0
        while offset < len(data):
            (length,) = struct.unpack_from("<I", data, offset)
            values.append(data[offset + 4 : offset + 4 + length])
            offset += 4 + length
    else:
        values = list(output.contents.bytes_contents)
    rows, k = output.shape
    return [[v.decode() for v in values[r * k : (r + 1) * k]] for r in range(rows)]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_top_k_with_labels_beside_a_plain_output(
    stub: pb_grpc.GRPCInferenceServiceStub, shared_server: Served, raw: bool
) -> None:
    outputs = [Requested(name="logits"), classified("probabilities", 3)]
    reply = stub.ModelInfer(request(outputs, raw), timeout=5)
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [
        ("logits", "FP32", [4, 10]),
        ("probabilities", "BYTES", [4, 3]),
    ]
    probabilities = shared_server.model.run_classifier(BATCH)["probabilities"]
    assert strings_of(reply, 1) == expected_classes(probabilities, 3, LABELS)
    assert len(reply.raw_output_contents) == 2  # every reply raw, as Triton answers


def test_every_class_of_one_example(stub: pb_grpc.GRPCInferenceServiceStub, shared_server) -> None:
    one = BATCH[:1]
    reply = stub.ModelInfer(request([classified("logits", 10)], True, one), timeout=5)
    logits = shared_server.model.run_classifier(one)["logits"]
    found = strings_of(reply, 0)
    assert found == expected_classes(logits, 10, LABELS)
    assert found[0][0].split(":")[2] == LABELS[int(logits.argmax())]


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (0, f"{FIELD}: 0; expected 1 to 10, the number of classes of output 'probabilities'"),
        (11, f"{FIELD}: 11; expected 1 to 10"),
        (-1, f"{FIELD}: -1; expected 1 to 10"),
        ("3", f"{FIELD}: expected an integer number of classes, got '3'"),
        (True, f"{FIELD}: expected an integer number of classes, got True"),
    ],
    ids=["zero", "too-many", "negative", "string", "bool"],
)
def test_a_bad_class_count_names_the_parameter(
    stub: pb_grpc.GRPCInferenceServiceStub, k: object, message: str
) -> None:
    outputs = [Requested(name="logits"), classified("probabilities", k)]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request(outputs, True), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(message)


def test_server_metadata_lists_the_extension(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    metadata = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)
    assert "classification" in metadata.extensions


def test_outputs_without_labels_and_integer_values(tmp_path: Path, serve: ServeFactory) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(
        serve(write_every_datatype_model(tmp_path / "model.onnx", ["INT32", "FP64"])).channel
    )
    ints = np.array([[5, -7, 5], [0, 2**31 - 1, -(2**31)]], np.int32)
    floats = np.array([[0.25, -3e-7, 1e20], [-0.5, -0.5, -1.0]], np.float64)
    tensors = [Tensor(name=f"x_{d}", datatype=d, shape=[2, 3]) for d in ("INT32", "FP64")]
    reply = stub.ModelInfer(
        pb.ModelInferRequest(
            model_name="foldserve", inputs=tensors,
            outputs=[classified("y_INT32", 3), classified("y_FP64", 3)],
            raw_input_contents=[ints.tobytes(), floats.tobytes()],
        ),
        timeout=5,
    )  # fmt: skip
    assert strings_of(reply, 0) == [
        ["5:0", "5:2", "-7:1"],
        ["2147483647:1", "0:0", "-2147483648:2"],
    ]
    assert strings_of(reply, 1) == [
        ["100000000000000000000.000000:2", "0.250000:0", "-0.000000:1"],
        ["-0.500000:0", "-0.500000:1", "-1.000000:2"],
    ]


def refused(stub: pb_grpc.GRPCInferenceServiceStub, message: pb.ModelInferRequest) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(message, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.details()


def test_outputs_that_cannot_be_ranked(tmp_path: Path, serve: ServeFactory) -> None:
    every = serve(write_every_datatype_model(tmp_path / "every" / "model.onnx", ["BOOL"]))
    tensor = Tensor(name="x_BOOL", datatype="BOOL", shape=[1, 3])
    tensor.contents.bool_contents.extend([True, False, True])
    message = pb.ModelInferRequest(
        model_name="foldserve", inputs=[tensor], outputs=[classified("y_BOOL", 1)]
    )
    assert refused(pb_grpc.GRPCInferenceServiceStub(every.channel), message) == (
        "outputs[0].parameters.classification: output 'y_BOOL' is BOOL; classification ranks "
        "numeric outputs only"
    )
    words = serve(write_words_model(tmp_path / "words" / "model.onnx"))
    text = Tensor(name="text", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(b"cat")
    outputs = [Requested(name="loud"), classified("code", 1)]
    message = pb.ModelInferRequest(model_name="foldserve", inputs=[text], outputs=outputs)
    assert refused(pb_grpc.GRPCInferenceServiceStub(words.channel), message) == (
        "outputs[1].parameters.classification: output 'code' has shape [-1]; classification "
        "needs [batch, classes]"
    )
    message.outputs[1].CopyFrom(classified("loud", 1))
    message.outputs[0].name = "code"
    assert "output 'loud' is BYTES; classification ranks numeric outputs only" in refused(
        pb_grpc.GRPCInferenceServiceStub(words.channel), message
    )


def test_a_dynamic_class_count_is_checked_after_the_run(
    tmp_path: Path, serve: ServeFactory
) -> None:
    path = save(
        tmp_path / "model.onnx",
        [helper.make_node("Identity", ["x"], ["y"])],
        [value("x", TensorProto.FLOAT, ["N", "L"])],
        [value("y", TensorProto.FLOAT, ["N", "L"])],
    )
    stub = pb_grpc.GRPCInferenceServiceStub(serve(path).channel)
    values = np.array([[1.0, 3.0, 2.0]], np.float32)
    tensor = Tensor(name="x", datatype="FP32", shape=[1, 3])
    message = pb.ModelInferRequest(
        model_name="foldserve", inputs=[tensor], outputs=[classified("y", 2)],
        raw_input_contents=[values.tobytes()],
    )  # fmt: skip
    assert strings_of(stub.ModelInfer(message, timeout=5), 0) == [["3.000000:1", "2.000000:2"]]
    message.outputs[0].CopyFrom(classified("y", 4))
    assert refused(stub, message) == (
        "outputs[0].parameters.classification: 4; expected 1 to 3, the output's number of classes"
    )


TRITON_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException
    client = triton.InferenceServerClient(sys.argv[1])
    batch = np.array(json.loads(sys.argv[2]), dtype=np.float32)
    features = triton.InferInput("input", list(batch.shape), "FP32")
    features.set_data_from_numpy(batch)
    outputs = [triton.InferRequestedOutput("probabilities", class_count=3)]
    result = client.infer("foldserve", [features], outputs=outputs)
    classes = result.as_numpy("probabilities")
    try:
        client.infer("foldserve", [features],
                     outputs=[triton.InferRequestedOutput("probabilities", class_count=20)])
        error = None
    except InferenceServerException as exc:
        error = [exc.status(), exc.message()]
    print(json.dumps({
        "shape": list(classes.shape),
        "classes": [[v.decode() for v in row] for row in classes.tolist()],
        "extensions": client.get_server_metadata(as_json=True)["extensions"],
        "error": error,
    }))
""")


def test_tritonclient_grpc_asks_for_classes(shared_server: Served) -> None:
    """tritonclient.grpc in a child process (its protobuf names clash with ours in one)."""
    done = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT, f"127.0.0.1:{shared_server.port}",
         json.dumps(BATCH[:2].tolist())],
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    probabilities = shared_server.model.run_classifier(BATCH[:2])["probabilities"]
    assert reply["shape"] == [2, 3]
    assert reply["classes"] == expected_classes(probabilities, 3, LABELS)
    assert "classification" in reply["extensions"]
    assert reply["error"] == [
        "StatusCode.INVALID_ARGUMENT",
        "outputs[0].parameters.classification: 20; expected 1 to 10, the number of classes of "
        "output 'probabilities'",
    ]


# --- the ranking and formatting in the core ---------------------------------------------------


def ranked(values: np.ndarray, k: int, labels=()) -> list[list[str]]:
    return [[s.decode() for s in row] for row in top_k(values, k, labels, "f").tolist()]


def test_top_k_is_highest_first_with_triton_formatting() -> None:
    values = np.array([[0.1, 0.7, 0.2], [3.0, -1.0, 2.5]], np.float32)
    assert ranked(values, 2) == [["0.700000:1", "0.200000:2"], ["3.000000:0", "2.500000:2"]]
    assert ranked(values, 1, ("a", "b", "c")) == [["0.700000:1:b"], ["3.000000:0:a"]]


def test_top_k_ties_rank_by_index_and_nan_last() -> None:
    values = np.array([[1.0, np.nan, 2.0, 2.0, -np.inf]], np.float64)
    assert ranked(values, 5) == [["2.000000:2", "2.000000:3", "1.000000:0", "-inf:4", "nan:1"]]


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint8, np.uint64])
def test_top_k_ranks_integers_exactly(dtype) -> None:
    info = np.iinfo(dtype)
    values = np.array([[info.min, info.max, 1, info.max]], dtype)
    assert ranked(values, 4) == [[f"{info.max}:1", f"{info.max}:3", "1:2", f"{info.min}:0"]]


def test_top_k_flattens_the_values_past_the_batch_axis() -> None:
    values = np.arange(12, dtype=np.float16).reshape(2, 3, 2)
    assert ranked(values, 2) == [["5.000000:5", "4.000000:4"], ["11.000000:5", "10.000000:4"]]
    assert top_k(values[:0], 2, (), "f").shape == (0, 2)


def test_top_k_refuses_more_classes_than_the_output_has() -> None:
    with pytest.raises(RequestError) as caught:
        top_k(np.zeros((1, 3), np.float32), 4, (), "outputs[0].parameters.classification")
    assert caught.value.status == Status.INVALID_ARGUMENT
    assert caught.value.message == (
        "outputs[0].parameters.classification: 4; expected 1 to 3, the output's number of classes"
    )
