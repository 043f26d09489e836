"""Where model files live: the file name of a model (alone, or in a repository's version
directory, `<dir>/<version>/model.onnx`), Triton's configuration file of a model directory
(`<dir>/config.pbtxt`), the directory `foldserve train` writes to and `make
run` serves by default, and the name a model is served under when nothing names it."""

from __future__ import annotations

MODEL_DIR = "models/default"  # what `make run` serves and `foldserve train` writes by default
MODEL_FILE = "model.onnx"
# Triton's model configuration, in protobuf text format, beside the version directories.
TRITON_CONFIG_FILE = "config.pbtxt"
# The name a model is served under when neither its config.json nor a setting names one.
MODEL_NAME = "foldserve"
