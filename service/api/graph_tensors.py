"""V2 requests and replies of a model foldserve did not train, checked against its graph.

Any number of inputs and outputs, of any datatype in `service.api.datatypes`: every input given
exactly once, by name, with the graph's datatype and rank, its fixed dimensions as the graph has
them and its dynamic ones of any size >= 1; data either all raw (`raw_input_contents`, one entry
per input in request order) or all typed. Float inputs must be finite. Every error is
INVALID_ARGUMENT naming the field, e.g. "inputs[1].datatype: input 'mask' is BOOL, got FP32".
"""

from __future__ import annotations

import numpy as np

from service._proto.inference import grpc_predict_v2_pb2 as v2
from service.api.datatypes import Datatype, datatype_of, decode_raw, decode_typed, encode
from service.api.tensors import check_finite
from service.core.errors import invalid
from service.core.graph_spec import GraphSpec, GraphTensor


def shown_shape(tensor: GraphTensor) -> list[int]:
    """A graph tensor's shape as V2 shows it: -1 for a dynamic dimension."""
    return [-1 if d is None else d for d in tensor.shape]


def decode_graph_inputs(
    request: v2.ModelInferRequest, graph: GraphSpec
) -> tuple[dict[str, np.ndarray], bool]:
    """Every input of a request, checked against the graph.

    Returns:
        (feeds, raw): the inputs by name; raw is True when the data came in
        `raw_input_contents`.

    Raises:
        RequestError: INVALID_ARGUMENT naming the field for any mismatch.
    """
    specs = {t.name: t for t in graph.inputs}
    raw_contents = request.raw_input_contents
    raw = bool(raw_contents)
    if raw and len(raw_contents) != len(request.inputs):
        raise invalid(
            f"raw_input_contents: expected {len(request.inputs)} entries (one per input, in "
            f"input order), got {len(raw_contents)}"
        )
    feeds: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        where = f"inputs[{index}]"
        spec = specs.get(tensor.name)
        if spec is None:
            raise invalid(
                f"{where}.name: unknown input {tensor.name!r}; the model's inputs are {list(specs)}"
            )
        if tensor.name in feeds:
            raise invalid(f"{where}.name: input {tensor.name!r} given twice")
        datatype = _check_tensor(tensor, spec, where)
        shape = list(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise invalid(
                    f"{where}.contents: data given in both contents and raw_input_contents"
                )
            value = decode_raw(raw_contents[index], datatype, shape, f"raw_input_contents[{index}]")
        elif tensor.HasField("contents"):
            value = decode_typed(tensor.contents, datatype, shape, f"{where}.contents")
        else:
            place = f"contents.{datatype.field} or " if datatype.field else ""
            raise invalid(
                f"{where}: no data for input {tensor.name!r}; expected it in "
                f"{place}raw_input_contents"
            )
        if spec.is_float:
            check_finite(value, f"{where} values", kind="")
        feeds[tensor.name] = value
    missing = [name for name in specs if name not in feeds]
    if missing:
        raise invalid(f"inputs: input(s) {missing} missing; the model's inputs are {list(specs)}")
    return feeds, raw


def _check_tensor(
    tensor: v2.ModelInferRequest.InferInputTensor, spec: GraphTensor, where: str
) -> Datatype:
    datatype = datatype_of(spec.dtype)
    if tensor.datatype != datatype.name:
        raise invalid(
            f"{where}.datatype: input {spec.name!r} is {datatype.name}, got {tensor.datatype!r}"
        )
    shape = list(tensor.shape)
    fits = len(shape) == len(spec.shape) and all(
        (d >= 1 if want is None else d == want) for d, want in zip(shape, spec.shape, strict=True)
    )
    if not fits:
        expected = ", ".join("dynamic" if d is None else str(d) for d in spec.shape)
        raise invalid(
            f"{where}.shape: input {spec.name!r} has shape [{expected}] (dynamic: any size >= 1), "
            f"got {shape}"
        )
    return datatype


def encode_graph_outputs(
    response: v2.ModelInferResponse, outputs: dict[str, np.ndarray], names: list[str], raw: bool
) -> None:
    """Add the named outputs to a V2 response, each with its own datatype and shape: raw bytes
    for a raw request, or when an output is FP16 (which has no typed field); typed otherwise."""
    raw = raw or any(datatype_of(outputs[name].dtype).field is None for name in names)
    for name in names:
        data = encode(response.outputs.add(name=name), outputs[name], raw)
        if data is not None:
            response.raw_output_contents.append(data)
