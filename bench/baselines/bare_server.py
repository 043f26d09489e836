"""A bare model server, a baseline of `foldserve bench`: the least a server can do with a model.

Per example it decodes the input, makes one onnxruntime run (foldserve's session options,
through `foldserve.core.loading.load_model`) and encodes the reply: `Predict`, `PredictStream` and
`ModelInfer` (typed contents answered typed, raw answered raw, as foldserve does), on the echo
floor's server stacks (`bench.baselines.echo`, `--runtime sync|aio|uvloop`). No validation,
metrics, admission or logging: foldserve's distance from it is what our own serving code costs,
its distance from the echo what the model costs.

Run `python -m foldserve.bench.baselines.bare_server --model FILE [--runtime R]`; it prints
`grpc_port=N` and serves until killed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb
from foldserve._proto.inference import grpc_predict_v2_pb2 as v2
from foldserve.bench.baselines.echo import FP32, run
from foldserve.contract import LOGITS, PROBABILITIES
from foldserve.core.loading import load_model
from foldserve.core.model import Model


class Bare:
    """Decode, run, encode; nothing else."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self._shape = (1, *model.require_classifier().example_shape)

    def predict(self, request: pb.PredictRequest) -> pb.PredictResponse:
        model = self._model
        outputs = model.run_classifier(
            np.asarray(request.features, dtype=np.float32).reshape(self._shape)
        )
        label = int(outputs[LOGITS][0].argmax())
        return pb.PredictResponse(
            label=label,
            class_name=model.class_labels[label],
            probabilities=outputs[PROBABILITIES][0].tolist(),
            model_name=model.name,
            model_version=model.version,
            request_id=request.request_id,
        )

    def infer(self, request: v2.ModelInferRequest) -> v2.ModelInferResponse:
        model = self._model
        tensor = request.inputs[0]
        shape = tuple(tensor.shape)
        raw = bool(request.raw_input_contents)
        if raw:
            batch = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(shape)
        else:
            batch = np.array(tensor.contents.fp32_contents, dtype=np.float32).reshape(shape)
        outputs = model.run_classifier(batch)
        reply = v2.ModelInferResponse(
            model_name=model.name, model_version=model.version, id=request.id
        )
        for name, array in outputs.items():
            output = reply.outputs.add(name=name, datatype=FP32, shape=array.shape)
            if raw:
                reply.raw_output_contents.append(array.tobytes())
            else:
                output.contents.fp32_contents.extend(array.ravel().tolist())
        return reply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the model.onnx to run per call")
    return run(lambda args: Bare(load_model(args.model)), argv, parser)


if __name__ == "__main__":
    sys.exit(main())
