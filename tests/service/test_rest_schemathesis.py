"""V2 REST fuzzed from the Open Inference Protocol's OpenAPI description (schemathesis), plus the
binary tensor extension (a strategy of ours): no answer is a 5xx, none hangs, and every 4xx is
`{"error": "..."}` with a message that names what was wrong.

Three generated calls in four name the served model and its version (the description's names
are any strings); of the inference bodies, a third name the model's input and datatype and a
third carry a valid input, so calls get past routing into tensor validation and the model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from tests.service.rest_server import RestServer, start_rest
from tests.service.subprocess_server import REPO

SPEC = REPO / "bench" / "fuzz" / "open_inference_rest.yaml"
SERVED = {"model_name": "foldserve", "model_version": "1"}
VALID_INPUT = {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}
TIMEOUT = 10  # seconds: a call that takes longer has hung
# Examples per operation; `FUZZ_EXAMPLES=1000 pytest tests/service/test_rest_schemathesis.py`
# runs a longer fuzz (about 5 minutes on 2 cores).
EXAMPLES = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
# A 4xx message starts with what was wrong: a field of the body (`inputs[0].shape: ...`), the
# body itself, a header, the model or version of the path, or the HTTP method.
NAMED = re.compile(
    r"(body|method|model_name|model_version|inference-header-content-length|content-encoding|"
    r"content-type|id|parameters|inputs|outputs)(\[\d+\])?[.:\[]"
)

schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture(scope="module")
def rest(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    """The tiny model as version 1 of model `foldserve`."""
    versions = tmp_path_factory.mktemp("schemathesis")
    (versions / "1").mkdir()
    shutil.copyfile(tiny_model_path, versions / "1" / "model.onnx")
    server = start_rest(versions)
    yield server
    server.stop()


@schema.hook
def flatmap_path_parameters(context, path_parameters: dict) -> st.SearchStrategy:
    """Three calls in four name the served model and version; the rest, what was drawn."""
    if not path_parameters:
        return st.just(path_parameters)
    served = {key: SERVED[key] for key in path_parameters}
    return st.sampled_from([served, served, served, path_parameters])


@schema.hook
def flatmap_body(context, body) -> st.SearchStrategy:
    """Of the inference bodies, a third as drawn, a third naming the model's input and its
    datatype, a third with a valid input (and the drawn id, parameters and outputs)."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
        return st.just(body)
    aimed = {**body, "inputs": [{**inputs[0], "name": "input", "datatype": "FP32"}, *inputs[1:]]}
    return st.sampled_from([body, aimed, {**body, "inputs": [VALID_INPUT]}])


def error_names_what_was_wrong(ctx, response, case) -> None:
    """A 4xx answer is `{"error": message}`, the message naming a field, header or the model;
    ModelReady's "not ready" (400, as Triton answers) says `"ready": false` beside it."""
    if not 400 <= response.status_code < 500:
        return
    body = json.loads(response.content)
    if case.path.endswith("/ready") and response.status_code == 400:
        name = urllib.parse.unquote(case.path_parameters["model_name"])  # as sent
        assert (body["name"], body["ready"]) == (name, False), body
        body = {"error": body["error"]}
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert NAMED.match(body["error"]), f"{response.status_code}: {body['error']!r}"


@schema.parametrize()
@EXAMPLES
def test_the_open_inference_protocol_operations(case, rest: RestServer) -> None:
    case.call_and_validate(
        base_url=rest.url,
        timeout=TIMEOUT,
        checks=[
            not_a_server_error,
            content_type_conformance,
            response_schema_conformance,
            error_names_what_was_wrong,
        ],
    )


# --- the binary tensor extension ---------------------------------------------------------------

HEADER = "Inference-Header-Content-Length"


@st.composite
def binary_requests(draw) -> tuple[dict[str, str], bytes]:
    """An infer call with the binary extension: a JSON header whose length the header field
    gives (right, off, absurd or not a number), `binary_data_size` right, off or odd, and the
    tensor bytes followed by a tail of garbage (or cut short)."""
    size = draw(st.sampled_from([256, 0, 255, 257, 1 << 40, -1, "256", None, 1.5]))
    parameters = {} if size is None else {"binary_data_size": size}
    shape = draw(st.sampled_from([[1, 64], [64], [1, 65], [2, 64], [0, 64]]))
    entry = {"name": "input", "datatype": "FP32", "shape": shape, "parameters": parameters}
    head = json.dumps({"inputs": [entry]}).encode()
    tensor = draw(st.binary(min_size=0, max_size=300))
    tail = draw(st.binary(max_size=16))
    length = draw(
        st.one_of(
            st.just(str(len(head))),
            st.integers(-5, len(head) + len(tensor) + 20).map(str),
            st.sampled_from(["", "x", "1e3", "12 ", str(1 << 63), "-0"]),
        )
    )
    headers = {HEADER: length, "Content-Type": "application/octet-stream"}
    return headers, head + tensor + tail


@given(call=binary_requests())
@EXAMPLES
def test_the_binary_tensor_extension(call: tuple[dict[str, str], bytes], rest: RestServer) -> None:
    headers, body = call
    for path in ("/v2/models/foldserve/infer", "/v2/models/foldserve/versions/1/infer"):
        answer = requests.post(rest.url + path, data=body, headers=headers, timeout=TIMEOUT)
        assert answer.status_code < 500, answer.text
        if answer.status_code != 200:
            error = answer.json()["error"]
            assert answer.json() == {"error": error} and NAMED.match(error), error
