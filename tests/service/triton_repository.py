"""A model repository written the way Triton users write theirs: `<model>/config.pbtxt`, label
files beside it, numbered version directories; configs in the style of Triton's own examples
(densenet_onnx's reshapes and label file), with the blocks foldserve ignores present
(instance_group details, dynamic_batching, optimization, model_warmup)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.service.foreign_files import save, value, write_logits_model, write_masked_model
from tests.service.model_files import write_tiny_model

DENSENET_LABELS = [f"class_{i}" for i in range(10)]
ANIMALS = ["cat", "dog", "bird"]
ANIMAL_WEIGHTS = np.random.default_rng(7).normal(size=(5, 3)).astype(np.float32)

DENSENET_CONFIG = """\
name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size : 0
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 4, 4 ]
    reshape { shape: [ 1, 3, 4, 4 ] }
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 10 ]
    reshape { shape: [ 1, 10, 1, 1 ] }
    label_filename: "densenet_labels.txt"
  }
]
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
"""

ANIMALS_CONFIG = """\
# A batching classifier, as a Triton user would configure it for a GPU.
name: "animals"
backend: "onnxruntime"
max_batch_size: 8
version_policy: { specific: { versions: [ 1, 3 ] } }
input [
  {
    name: "features"
    data_type: TYPE_FP32
    dims: [ 5 ]
  }
]
output [
  {
    name: "scores"
    data_type: TYPE_FP32
    dims: [ 3 ]
    label_filename: "labels.txt"
  }
]
instance_group [
  {
    count: 4
    kind: KIND_GPU
    gpus: [ 0 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
}
optimization { execution_accelerators {
  gpu_execution_accelerator : [ {
    name : "tensorrt"
    parameters { key: "precision_mode" value: "FP16" }
  } ]
}}
model_warmup [
  {
    name: "zeros"
    batch_size: 1
    inputs { key: "features" value: { data_type: TYPE_FP32 dims: [ 5 ] zero_data: true } }
  }
]
"""

# No inputs or outputs declared: Triton completes them from the model; so does foldserve.
MASKED_CONFIG = """\
max_batch_size: 4
default_model_filename: "net.onnx"
version_policy: { latest { num_versions: 2 } }
"""


def write_densenet_like(path: Path) -> Path:
    """densenet_onnx's interface, small: data_0 FP32 [1, 3, 4, 4] -> fc6_1 FP32 [1, 10, 1, 1]
    (flattened, times a fixed matrix)."""
    weights = np.random.default_rng(3).normal(size=(48, 10)).astype(np.float32)
    node = helper.make_node
    return save(
        path,
        [
            node("Reshape", ["data_0", "flat_shape"], ["flat"]),
            node("MatMul", ["flat", "W"], ["scores"]),
            node("Reshape", ["scores", "out_shape"], ["fc6_1"]),
        ],
        [value("data_0", TensorProto.FLOAT, [1, 3, 4, 4])],
        [value("fc6_1", TensorProto.FLOAT, [1, 10, 1, 1])],
        [
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(np.array([1, 48], np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([1, 10, 1, 1], np.int64), "out_shape"),
        ],
    )


def densenet_weights(path: Path) -> np.ndarray:
    """The matrix `write_densenet_like` wrote (the reference answer is flat @ W)."""
    import onnx

    model = onnx.load(path)
    found = next(t for t in model.graph.initializer if t.name == "W")
    return numpy_helper.to_array(found)


def write_model_dir(root: Path, name: str, config: str | None, labels: dict[str, list]) -> Path:
    """`root/name/` with its config.pbtxt (None: none) and label files (file name -> lines)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.pbtxt").write_text(config)
    for file, lines in labels.items():
        (folder / file).write_text("\n".join(lines) + "\n")
    return folder


def write_triton_repository(root: Path) -> Path:
    """Four models: densenet_onnx (reshapes, label file, instance_group), animals (batching
    classifier: max_batch_size 8, labels, a specific version policy over versions 1-3, and the
    GPU blocks), masked (no tensors declared, default_model_filename, latest 2 of 3) and
    foldserve (a model foldserve trained, no config.pbtxt)."""
    densenet = write_model_dir(
        root, "densenet_onnx", DENSENET_CONFIG, {"densenet_labels.txt": DENSENET_LABELS}
    )
    write_densenet_like(densenet / "1" / "model.onnx")
    animals = write_model_dir(root, "animals", ANIMALS_CONFIG, {"labels.txt": ANIMALS})
    for version in (1, 2, 3):
        write_logits_model(animals / str(version) / "model.onnx", ANIMAL_WEIGHTS * version)
    masked = write_model_dir(root, "masked", MASKED_CONFIG, {})
    for version in (1, 2, 3):
        write_masked_model(masked / str(version) / "net.onnx")
    (root / "foldserve" / "1").mkdir(parents=True)
    write_tiny_model(root / "foldserve" / "1" / "model.onnx")
    return root
