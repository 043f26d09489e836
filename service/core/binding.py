"""One-example model runs through onnxruntime IO bindings, one binding per thread.

`InferenceSession.run` on numpy arrays wraps the input, allocates every output and converts it
back on each call; a bound run writes into buffers that stay bound. A binding belongs to one
thread (a session is shared by every gRPC worker thread, a binding's buffers are not), and the
outputs are copied out of its buffers, so a call's answer never aliases what the thread's next
call overwrites.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from foldserve.runtime import ort


class BoundRuns:
    """One-example runs of `session` through a per-thread IO binding.

    Args:
        session: the session to run (shared by every thread).
        input_name: its one input.
        example_shape: one example's input shape (the batch is `[1, *example_shape]`).
        output_names: the outputs to fetch, in order.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        input_name: str,
        example_shape: Sequence[int],
        output_names: Sequence[str],
    ) -> None:
        self._session = session
        self._input = input_name
        self._shape = (1, *example_shape)
        self._names = tuple(output_names)
        probe = session.run(self._names, {input_name: np.zeros(self._shape, np.float32)})
        self._output_shapes = [value.shape for value in probe]
        self._local = threading.local()

    def _bind(self) -> tuple[ort.IOBinding, np.ndarray, list[np.ndarray]]:
        binding = self._session.io_binding()
        example = np.zeros(self._shape, np.float32)
        binding.bind_cpu_input(self._input, example)
        outputs = [np.empty(shape, np.float32) for shape in self._output_shapes]
        for name, buffer in zip(self._names, outputs, strict=True):
            binding.bind_output(name, "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
        self._local.bound = bound = (binding, example, outputs)
        return bound

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name for a float32 batch of one example (`[1, *example_shape]`)."""
        bound = getattr(self._local, "bound", None)
        binding, example, outputs = bound if bound is not None else self._bind()
        example[...] = batch
        self._session.run_with_iobinding(binding)
        return {name: buffer.copy() for name, buffer in zip(self._names, outputs, strict=True)}
