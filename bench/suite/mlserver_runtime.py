"""The custom MLServer runtime of `foldserve bench --peer mlserver`: the same model.onnx in
onnxruntime, one example per request, returning the outputs its model settings declare (those
foldserve serves: a graph foldserve trained also has shift-monitor taps, which it does not).

MLServer imports this file from the model's folder (`peer.write_files` copies it there), inside
the peer's own virtual environment: foldserve never imports it, and mlserver is not one of
foldserve's dependencies. The session takes foldserve's options (one thread, sequential, every
graph optimization), so both servers make the same onnxruntime run per call.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


def session_options() -> ort.SessionOptions:
    """foldserve's session options (foldserve.core.loading.session_options), spelt out here:
    this file runs where foldserve is not installed."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


class OnnxModel(MLModel):
    """Decode each input with MLServer's NumPy codec, run, encode each output with it."""

    async def load(self) -> bool:
        path = await get_model_uri(self.settings)
        self._session = ort.InferenceSession(
            path, session_options(), providers=["CPUExecutionProvider"]
        )
        declared = self.settings.outputs or self._session.get_outputs()
        self._outputs = [output.name for output in declared]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {tensor.name: NumpyCodec.decode_input(tensor) for tensor in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name, array)
                for name, array in zip(self._outputs, results, strict=True)
            ],
        )
