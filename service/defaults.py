"""Every default and every shared name of foldserve, in one place.

Both halves read these: the server's settings, the client's, the data split that training writes
into a model file and `foldserve predict` replays, and the training hyperparameters. The model
file's own names (metadata keys, input and output names) belong to `service.contract`.
"""

from __future__ import annotations

# --- the command ------------------------------------------------------------------------------
COMMAND = "foldserve"
# Entry-point group through which installed parts (the training half) add subcommands.
PLUGIN_GROUP = f"{COMMAND}.commands"

# --- where models live ------------------------------------------------------------------------
MODEL_DIR = "models/default"  # what `make run` serves and `foldserve train` writes by default
MODEL_FILE = "model.onnx"
CARD_FILE = "card.json"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"

# --- serving (`foldserve serve`; each also reads a FOLDSERVE_* variable) -----------------------
MODEL_NAME = "foldserve"
HOST = "0.0.0.0"
PORT = 50051
METRICS_PORT = 9100
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_CONCURRENT_RPCS = 64
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_LEVEL = "INFO"
LOG_FORMATS = ("text", "json")
LOG_FORMAT = "text"
REFLECTION = True
GRACE_SECONDS = 10.0
# While draining, stop only once no call has been refused for this long (seconds).
DRAIN_QUIET_SECONDS = 0.25
# The name `ServerMetadata` answers with (the V2 protocol's server name).
SERVER_NAME = COMMAND

# --- the input shift monitor ------------------------------------------------------------------
SHIFT_HALF_LIFE = 500  # examples after which an observation's weight has halved

# --- clients (`foldserve predict`, `foldserve health`) -----------------------------------------
TARGET = f"127.0.0.1:{PORT}"
PREDICT_TIMEOUT_SECONDS = 10.0
HEALTH_TIMEOUT_SECONDS = 3.0

# --- data -------------------------------------------------------------------------------------
DIGITS = "digits"
LABEL_COLUMN = "label"
SPLIT_SEED = 0
VAL_FRACTION = 0.15
TEST_FRACTION = 0.2
MIN_ROWS_PER_CLASS = 3  # one each for train, validation and test

# --- training (`foldserve train`) -------------------------------------------------------------
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

# --- folding an ONNX file (`foldserve fold`) ---------------------------------------------------
# The folded graph must equal the input graph in onnxruntime on random inputs within
# tolerance × (output scale + |expected|), the output scale being the largest |expected| value.
ONNX_FOLD_TOLERANCE = 1e-5
ONNX_FOLD_SEED = 0
# Random inputs fill a symbolic dimension with these sizes: the batch axis, and any other axis
# (`--input-shape` overrides them).
ONNX_FOLD_BATCH = 2
ONNX_FOLD_DIM = 16

# --- exporting your own torch module (`foldserve export --module`) ----------------------------
MODULE_DATASET = "unknown"  # the model file's `dataset` when no data set is named
MODULE_CHECK_EXAMPLES = 256  # random examples the export verifies on when none are given
