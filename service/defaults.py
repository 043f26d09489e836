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
# gRPC's own bounds sit above ours, so that what we refuse is answered (and counted) by us: room
# for health checks and reflection beside a full house, and messages up to this many times our
# size limit reach our code to be refused there.
RPC_HEADROOM = 32
MESSAGE_SIZE_HEADROOM = 2
MAX_REQUEST_ID_CHARS = 1024  # a request id is echoed in the reply: bounded
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_LEVEL = "INFO"
LOG_FORMATS = ("text", "json")
LOG_FORMAT = "text"
REFLECTION = True
KEEP_VERSIONS = 2  # the newest valid versions that stay loaded and addressable
POLL_SECONDS = 10.0  # how often the model repository is looked at (SIGHUP: at once)
GRACE_SECONDS = 10.0
WORKERS = "auto"  # server processes on the port: auto = the CPUs this process may use
WORKER_START_SECONDS = 120.0  # a worker that has not started by then stops the server
WORKER_RESTARTS = 5  # more deaths than this in a minute stop the server
# On SIGTERM, keep serving this long with health NOT_SERVING before refusing new calls, so that a
# balancer polling the health service (or Kubernetes removing the endpoint) stops sending first.
DRAIN_DELAY_SECONDS = 0.0
# A health service name that stays SERVING while the server drains, for liveness probes: readiness
# ("" and each API) turns NOT_SERVING at SIGTERM, and a draining server must not be restarted.
LIVENESS_SERVICE = "liveness"
ACCESS_LOG = False
# Micro-batching of concurrent model runs (`--batching on|off`): off unless the bench shows a gain.
BATCHING = False
BATCH_MIN_IN_FLIGHT = 32  # calls in flight from which concurrent runs are batched
BATCH_MAX_EXAMPLES = 64  # examples per shared run at most
# The bearer token, for the prediction APIs (never a flag: flags show in `ps`).
AUTH_TOKEN_ENV = "FOLDSERVE_AUTH_TOKEN"
# While draining, stop only once no call has been refused for this long (seconds).
DRAIN_QUIET_SECONDS = 0.25
# The name `ServerMetadata` answers with (the V2 protocol's server name).
SERVER_NAME = COMMAND

# --- the covariate-shift monitor (calibrated at export, run by the server) ---------------------
SHIFT_MONITOR = True  # `foldserve serve --shift-monitor on|off`
SHIFT_CHECK_EVERY = 16  # examples between two scorings of the live state (the alarm's resolution)
SHIFT_PUBLISH_SECONDS = 5.0  # --workers N: how often each worker publishes its shift series
SHIFT_PENDING_ROWS = 64  # at most this many examples wait to be folded into the state at once
SHIFT_HALF_LIFE = 100.0  # examples after which an observation's weight has halved
SHIFT_MARGIN = 1.5  # layer and sentinel thresholds: this times the clean replay's maximum
SHIFT_PRIOR_MARGIN = 2.0  # class-prior threshold: this times the clean replay's maximum
SHIFT_REPLAY = 20_000  # requests in the clean replay that calibrates the thresholds
SHIFT_REPLAY_SEED = 0
SHIFT_MIN_VAR_FRACTION = 0.01  # units under this fraction of their layer's median variance
SHIFT_VAR_FLOOR = 0.01  # a unit's live variance counts as at least this times its reference
SHIFT_CLIP = 5.0  # examples enter the averages winsorized at this many reference stds
SHIFT_RESAMPLE_EVERY = 1000  # replay requests per bootstrap resample of the held-out examples

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

# --- the benchmark (`foldserve bench`) ---------------------------------------------------------
BENCH_OUT = "bench-results"  # where the JSON, the Markdown table and the plots go
BENCH_IN_FLIGHT = (1, 8, 32, 64)  # calls kept in flight by the load generator
# The level of the throughput targets and of the --workers comparison.
BENCH_TARGET_IN_FLIGHT = 32
# Client connections that carry the calls in flight: SO_REUSEPORT balances workers per
# connection, so one connection would put every call on one worker.
BENCH_CONNECTIONS = 8
BENCH_STREAMS = 4  # "several streams": each on its own connection
# The full run (`foldserve bench`, a few minutes) and the short one (`--short`, seconds; `make
# test` runs it). Calls are per server, method and round; seconds per measurement.
BENCH_FULL = {
    "rounds": 3,
    "calls": 5000,
    "warmup": 500,
    "duration": 2.0,
    "stream_messages": 5000,
    "workers": (1, 2),
    "ort_seconds": 0.3,
}
BENCH_SHORT = {
    "rounds": 1,
    "calls": 200,
    "warmup": 50,
    "duration": 0.2,
    "stream_messages": 200,
    "workers": (1,),
    "ort_seconds": 0.02,
}
BENCH_ORT_BATCHES = (1, 32, 256)  # the onnxruntime-alone comparison, folded vs BN kept

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
