"""A bare model server, a baseline of `foldserve bench`: the least a server can do with a model.

It decodes the features, runs one onnxruntime run (same session options as foldserve) and
encodes the reply; no validation, metrics, admission or logging. foldserve's distance from it is
what our own serving code costs.

Run `python -m service.tools.bare_server --model FILE`; it prints `port=N` and serves until killed.
"""

from __future__ import annotations

import argparse
import sys

import grpc
import numpy as np

from service._proto.foldserve.v1 import predictor_pb2 as pb
from service.contract import LOGITS, PROBABILITIES
from service.core.model import load_model
from service.tools.echo import serve_sync


def _predict(model_path: str):
    model = load_model(model_path)
    shape = (1, *model.input.shape)

    def predict(request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        outputs = model.run(np.asarray(request.features, dtype=np.float32).reshape(shape))
        label = int(outputs[LOGITS][0].argmax())
        return pb.PredictResponse(
            label=label,
            class_name=model.class_labels[label],
            probabilities=outputs[PROBABILITIES][0].tolist(),
        )

    return predict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the model.onnx to run per call")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve_sync(args.host, _predict(args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
