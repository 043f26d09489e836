"""inference.GRPCInferenceService (KServe V2 / Open Inference Protocol) over real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest

from foldserve._proto.inference import grpc_predict_v2_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.service.conftest import Served
from tests.service.subprocess_server import REPO, env

Tensor = pb.ModelInferRequest.InferInputTensor
Requested = pb.ModelInferRequest.InferRequestedOutputTensor
BATCH = np.random.default_rng(3).normal(size=(4, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def stub(shared_server: Served) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(shared_server.channel)


def raw_request(batch: np.ndarray = BATCH, **fields) -> pb.ModelInferRequest:
    tensor = Tensor(name="input", datatype="FP32", shape=batch.shape)
    return pb.ModelInferRequest(
        model_name="foldserve", inputs=[tensor], raw_input_contents=[batch.tobytes()], **fields
    )


def typed_request(batch: np.ndarray = BATCH, **fields) -> pb.ModelInferRequest:
    tensor = Tensor(name="input", datatype="FP32", shape=batch.shape)
    tensor.contents.fp32_contents.extend(batch.ravel().tolist())
    return pb.ModelInferRequest(model_name="foldserve", inputs=[tensor], **fields)


def test_server_live_ready_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    metadata = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)
    assert metadata.name == "foldserve"
    assert metadata.version


def test_model_ready(stub: pb_grpc.GRPCInferenceServiceStub, shared_server: Served) -> None:
    assert stub.ModelReady(pb.ModelReadyRequest(name="foldserve"), timeout=5).ready
    version = shared_server.model.version
    assert stub.ModelReady(pb.ModelReadyRequest(name="foldserve", version=version)).ready
    # A model (version) that is not served is not ready: an answer, not an error (Triton's).
    for request in (
        pb.ModelReadyRequest(name="other"),
        pb.ModelReadyRequest(name="foldserve", version="7"),
    ):
        assert not stub.ModelReady(request, timeout=5).ready


def test_model_metadata(stub: pb_grpc.GRPCInferenceServiceStub, shared_server: Served) -> None:
    reply = stub.ModelMetadata(pb.ModelMetadataRequest(name="foldserve"), timeout=5)
    assert reply.name == "foldserve"
    assert list(reply.versions) == [shared_server.model.version]
    assert reply.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in reply.inputs] == [
        ("input", "FP32", [-1, 64])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in reply.outputs] == [
        ("logits", "FP32", [-1, 10]),
        ("probabilities", "FP32", [-1, 10]),
    ]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "name: unknown model 'nope'" in caught.value.details()


def test_infer_raw_answers_raw(
    stub: pb_grpc.GRPCInferenceServiceStub, shared_server: Served
) -> None:
    reply = stub.ModelInfer(raw_request(id="abc"), timeout=5)
    outputs = shared_server.model.run_classifier(BATCH)
    logits, probabilities = outputs["logits"], outputs["probabilities"]
    assert reply.id == "abc"
    assert (reply.model_name, reply.model_version) == ("foldserve", shared_server.model.version)
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [
        ("logits", "FP32", [4, 10]),
        ("probabilities", "FP32", [4, 10]),
    ]
    assert not reply.outputs[0].HasField("contents")
    got = [np.frombuffer(raw, "<f4").reshape(4, 10) for raw in reply.raw_output_contents]
    np.testing.assert_array_equal(got[0], logits)
    np.testing.assert_array_equal(got[1], probabilities)


def test_a_typed_request_is_answered_raw_as_triton_answers(
    stub: pb_grpc.GRPCInferenceServiceStub, shared_server: Served
) -> None:
    one = BATCH[:1]
    reply = stub.ModelInfer(typed_request(one, outputs=[Requested(name="probabilities")]))
    assert [o.name for o in reply.outputs] == ["probabilities"]
    assert not reply.outputs[0].HasField("contents")
    probabilities = shared_server.model.run_classifier(one)["probabilities"]
    got = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(1, 10)
    np.testing.assert_array_equal(got, probabilities)


INVALID_PARAMETERS = [
    ({"sequence_id": pb.InferParameter(int64_param=7)}, "parameters.sequence_id: not implemented"),
    ({"priority": pb.InferParameter(uint64_param=1)}, "parameters.priority: not implemented"),
    ({"note": pb.InferParameter(string_param="x")}, "parameters.note: unknown parameter"),
    ({"timeout": pb.InferParameter(int64_param=-5)}, "parameters.timeout: -5; expected"),
]


@pytest.mark.parametrize(("parameters", "message"), INVALID_PARAMETERS)
def test_parameters_not_implemented_are_refused_by_name(
    stub: pb_grpc.GRPCInferenceServiceStub, parameters, message: str
) -> None:
    request = raw_request()
    for name, value in parameters.items():
        request.parameters[name].CopyFrom(value)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


def test_a_request_timeout_is_its_deadline(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = raw_request()
    request.parameters["timeout"].int64_param = 5_000_000  # µs: ample
    assert stub.ModelInfer(request, timeout=5).outputs
    request.parameters["timeout"].int64_param = 1  # over before the model runs
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_requested_outputs_keep_their_order(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    outputs = [Requested(name="probabilities"), Requested(name="logits")]
    reply = stub.ModelInfer(raw_request(outputs=outputs), timeout=5)
    assert [o.name for o in reply.outputs] == ["probabilities", "logits"]
    assert len(reply.raw_output_contents) == 2


def _with(request: pb.ModelInferRequest, change) -> pb.ModelInferRequest:
    change(request)
    return request


INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_INFERS = [
    ("no inputs", pb.ModelInferRequest(model_name="foldserve"), INVALID,
     "inputs: input(s) ['input'] missing; the model's inputs are ['input']"),
    ("two inputs", _with(raw_request(), lambda r: (r.inputs.append(r.inputs[0]),
                                                   r.raw_input_contents.append(BATCH.tobytes()))),
     INVALID, "inputs[1].name: input 'input' given twice"),
    ("input name", _with(raw_request(), lambda r: setattr(r.inputs[0], "name", "x")), INVALID,
     "inputs[0].name: unknown input 'x'; the model's inputs are ['input']"),
    ("datatype", _with(raw_request(), lambda r: (setattr(r.inputs[0], "datatype", "INT32"))),
     INVALID, "inputs[0].datatype: input 'input' is FP32, got 'INT32'"),
    ("unknown datatype", _with(raw_request(), lambda r: setattr(r.inputs[0], "datatype", "F32")),
     INVALID, "inputs[0].datatype: unknown datatype 'F32'; expected one of BOOL, INT8"),
    ("shape rank", raw_request(BATCH.reshape(-1)), INVALID,
     "inputs[0].shape: input 'input' has shape [dynamic, 64] (dynamic: any size >= 1), "
     "got [256]"),
    ("feature count", raw_request(BATCH[:, :63].copy()), INVALID,
     "inputs[0].shape: input 'input' has shape [dynamic, 64] (dynamic: any size >= 1), "
     "got [4, 63]"),
    ("empty batch", raw_request(BATCH[:0]), INVALID,
     "inputs[0].shape: input 'input' has shape [dynamic, 64] (dynamic: any size >= 1), "
     "got [0, 64]"),
    ("negative dimension", _with(raw_request(), lambda r: r.inputs[0].shape.__setitem__(0, -4)),
     INVALID, "inputs[0].shape: [-4, 64] has a negative dimension"),
    ("no data", _with(raw_request(), lambda r: r.ClearField("raw_input_contents")), INVALID,
     "inputs[0]: no data for input 'input'; expected 256 FP32 values for shape [4, 64] in "
     "contents.fp32_contents or raw_input_contents"),
    ("raw not multiple of 4",
     _with(raw_request(), lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 1023)), INVALID,
     "raw_input_contents[0]: expected 1024 bytes (256 FP32 values of 4 byte(s) for shape [4, 64]), "
     "got 1023"),
    ("raw size vs shape",
     _with(raw_request(), lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 1020)), INVALID,
     "raw_input_contents[0]: expected 1024 bytes (256 FP32 values of 4 byte(s) for shape [4, 64]), "
     "got 1020"),
    ("typed count", _with(typed_request(), lambda r: r.inputs[0].contents.fp32_contents.pop()),
     INVALID, "inputs[0].contents.fp32_contents: expected 256 values for shape [4, 64], got 255"),
    ("typed wrong field",
     _with(raw_request(), lambda r: (r.ClearField("raw_input_contents"),
                                     r.inputs[0].contents.int_contents.extend([1] * 256))),
     INVALID, "inputs[0].contents: FP32 data belongs in fp32_contents, got int_contents"),
    ("both raw and typed",
     _with(typed_request(), lambda r: r.raw_input_contents.append(BATCH.tobytes())), INVALID,
     "inputs[0].contents: data given in both contents and raw_input_contents"),
    ("nan", raw_request(np.where(np.arange(256).reshape(4, 64) == 70, np.nan, BATCH)
                        .astype(np.float32)), INVALID, "inputs[0] values[70]: nan is not finite"),
    ("infinity", typed_request(np.full((1, 64), -np.inf, np.float32)), INVALID,
     "inputs[0] values[0]: -inf is not finite"),
    ("unknown output", raw_request(outputs=[Requested(name="embedding")]), INVALID,
     "outputs[0].name: unknown output 'embedding'; expected one of ['logits', 'probabilities']"),
    ("repeated output", raw_request(outputs=[Requested(name="logits")] * 2), INVALID,
     "outputs[1].name: output 'logits' requested twice"),
    ("huge shape, no data",  # 2**58 * 64 values: a product that wraps to 0 in int64
     _with(raw_request(), lambda r: (r.inputs[0].shape.__setitem__(0, 2**58),
                                     r.raw_input_contents.__setitem__(0, b""))),
     INVALID, "raw_input_contents[0]: expected 73786976294838206464 bytes"),
    ("huge shape, typed",
     _with(typed_request(), lambda r: (r.inputs[0].shape.__setitem__(0, 2**58),
                                       r.inputs[0].contents.ClearField("fp32_contents"))),
     INVALID, "inputs[0].contents.fp32_contents: expected 18446744073709551616 values"),
    ("long id", _with(raw_request(), lambda r: setattr(r, "id", "a" * 2000)), INVALID,
     "id: 2000 characters; at most 1024"),
    ("unknown model", _with(raw_request(), lambda r: setattr(r, "model_name", "m2")),
     grpc.StatusCode.NOT_FOUND, "model_name: unknown model 'm2'"),
    ("unknown version", raw_request(model_version="3"), grpc.StatusCode.NOT_FOUND,
     "model_version: unknown version '3'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [case[1:] for case in BAD_INFERS],
    ids=[c[0] for c in BAD_INFERS],
)
def test_infer_bad_input(
    stub: pb_grpc.GRPCInferenceServiceStub,
    request_: pb.ModelInferRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request_, timeout=5)
    assert caught.value.code() == code
    assert message in caught.value.details()
    assert stub.ModelInfer(raw_request(), timeout=5).outputs


def test_same_wire_format_as_tritonclient() -> None:
    """Every field of our V2 messages has the name, number and type tritonclient's have.

    tritonclient registers the same message names in protobuf's default pool, so the two cannot
    be imported into one process: compare descriptors dumped by a child process.
    """
    script = textwrap.dedent("""
        import json, sys
        from tritonclient.grpc import service_pb2 as module
        def dump(d):
            fields = {f.name: [f.number, f.type, f.is_repeated] for f in d.fields}
            nested = {n.name: dump(n) for n in d.nested_types if not n.GetOptions().map_entry}
            return {"fields": fields, "nested": nested}
        names = json.loads(sys.argv[1])
        print(json.dumps({n: dump(module.DESCRIPTOR.message_types_by_name[n]) for n in names}))
    """)
    ours = pb.DESCRIPTOR.message_types_by_name
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(sorted(ours))],
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=60, check=True,
    )  # fmt: skip
    theirs = json.loads(result.stdout)

    def compare(mine, their: dict, where: str) -> None:
        for field in mine.fields:
            assert their["fields"].get(field.name) == [
                field.number, field.type, field.is_repeated
            ], f"{where}.{field.name}"  # fmt: skip
        for nested in mine.nested_types:
            if not nested.GetOptions().map_entry:
                compare(nested, their["nested"][nested.name], f"{where}.{nested.name}")

    for name, descriptor in ours.items():
        compare(descriptor, theirs[name], name)
    services = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert services.full_name == "inference.GRPCInferenceService"


def test_tritonclient_talks_to_foldserve(shared_server: Served) -> None:
    """tritonclient.grpc (in a child process: see above) runs liveness, metadata and inference."""
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import tritonclient.grpc as triton
        client = triton.InferenceServerClient(sys.argv[1])
        batch = np.array(json.loads(sys.argv[2]), dtype=np.float32)
        inp = triton.InferInput("input", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        outputs = [triton.InferRequestedOutput("probabilities")]
        result = client.infer("foldserve", [inp], outputs=outputs, request_id="t1")
        meta = client.get_model_metadata("foldserve", as_json=True)
        print(json.dumps({
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready("foldserve"),
            "metadata": meta,
            "probabilities": result.as_numpy("probabilities").tolist(),
            "logits": result.as_numpy("logits"),
            "id": result.get_response().id,
        }))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script, f"127.0.0.1:{shared_server.port}",
         json.dumps(BATCH[:3].tolist())],
        capture_output=True, text=True, cwd=REPO, env=env(), timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["live"] and reply["ready"] and reply["model_ready"]
    assert reply["metadata"]["name"] == "foldserve"
    assert reply["metadata"]["platform"] == "onnxruntime_onnx"
    assert reply["metadata"]["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}
    ]
    assert reply["logits"] is None  # not requested, not sent
    assert reply["id"] == "t1"
    probabilities = shared_server.model.run_classifier(BATCH[:3])["probabilities"]
    np.testing.assert_array_equal(np.array(reply["probabilities"], np.float32), probabilities)
