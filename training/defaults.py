"""The training half's defaults: the files a training run writes beside model.onnx, the
hyperparameters of `foldserve train`, and the checks of `foldserve fold` and `export --module`."""

from __future__ import annotations

CARD_FILE = "card.json"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
ARCHITECTURES = ("mlp", "cnn")
ARCH = "mlp"
EPOCHS = {"mlp": 40, "cnn": 30}
BATCH_SIZE = 64
EVAL_BATCH_SIZE = 512
OPTIMIZERS = ("adam", "adamw", "sgd")
OPTIMIZER = "adamw"
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
DEVICES = ("auto", "cpu", "cuda")
DEVICE = "auto"
MLP_HIDDEN = (512, 256)
CNN_CHANNELS = (32, 64)
CNN_HEAD_WIDTH = 128
DROPOUT = 0.2
# The folded graph must equal the input graph in onnxruntime on random inputs within
# tolerance × (output scale + |expected|), the output scale being the largest |expected| value.
ONNX_FOLD_TOLERANCE = 1e-5
ONNX_FOLD_SEED = 0
# Random inputs fill a symbolic dimension with these sizes: the batch axis, and any other axis
# (`--input-shape` overrides them).
ONNX_FOLD_BATCH = 2
ONNX_FOLD_DIM = 16
MODULE_DATASET = "unknown"  # the model file's `dataset` when no data set is named
MODULE_CHECK_EXAMPLES = 256  # random examples the export verifies on when none are given
