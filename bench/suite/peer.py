"""`foldserve bench --peer mlserver`: Seldon MLServer beside foldserve, same model, same client.

MLServer is never a dependency of foldserve. The first run creates a virtual environment of its
own under the cache directory (`~/.cache/foldserve/peers/mlserver-VERSION`, or
`$XDG_CACHE_HOME/...`, or `--peer-cache DIR`), installs the pinned MLServer there with the
onnxruntime and grpcio releases foldserve runs on (so both servers make the same onnxruntime run
on the same gRPC core), and later runs reuse it. Each run writes, in its scratch directory:

- `settings.json`: in-process (`parallel_workers: 0`, one process like foldserve's one-worker
  run), `debug: false` (MLServer's production setting: no access log), 127.0.0.1, free ports;
- `models/NAME/model-settings.json`: the model under foldserve's V2 name, its inputs and the
  outputs foldserve serves, and the custom runtime (`mlserver_runtime.py`, copied beside it),
  which loads the same model.onnx with foldserve's session options.

An installation that fails (no network, a build error) raises `PeerError` with pip's last lines;
the suite reports it and measures the rest.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc

from foldserve.bench.suite.servers import ServerSpec
from foldserve.bench.suite.workloads import INFER_RAW, INFER_TYPED, REST
from foldserve.contract.layout import MODEL_NAME
from foldserve.core.datatypes import datatype_of
from foldserve.core.graph import TensorSpec
from foldserve.core.model import Model
from foldserve.runtime import ort

MLSERVER = "mlserver"
MLSERVER_VERSION = "1.7.1"  # the release measured; installs on Python 3.11
RUNTIME_MODULE = "foldserve_peer_runtime"
RUNTIME_SOURCE = Path(__file__).with_name("mlserver_runtime.py")
MARKER = "foldserve-peer.json"  # written once the installation is complete
PEER_WORKLOADS = (INFER_TYPED, INFER_RAW, *REST)
INSTALL_SECONDS = 900


class PeerError(RuntimeError):
    """The peer cannot be installed or set up here; the message says why."""


def cache_dir(base: Path | None = None) -> Path:
    """Where the peer's virtual environment lives: `base`, or the user's cache directory."""
    root = base or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    if base is None:
        root = root / "foldserve" / "peers"
    return root / f"{MLSERVER}-{MLSERVER_VERSION}"


def requirements() -> list[str]:
    """What the peer's environment installs: MLServer, and foldserve's onnxruntime and grpcio."""
    return [
        f"mlserver=={MLSERVER_VERSION}",
        f"onnxruntime=={ort.__version__}",
        f"grpcio=={grpc.__version__}",
    ]


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"could not {what}: {exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        tail = "\n".join(lines[-6:]) or "(no output)"
        raise PeerError(f"could not {what} (exit {done.returncode}):\n{tail}")


def create_venv(venv: Path) -> None:
    """A fresh virtual environment at `venv`, on this Python, with pip."""
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"create a venv at {venv}")


def pip_install(venv: Path, packages: list[str]) -> None:
    """pip install `packages` into the environment at `venv`."""
    python = str(venv / "bin" / "python")
    command = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages]
    _run(command, f"install {' '.join(packages)} into {venv}")


def ensure(venv: Path, say: Callable[[str], None] = print) -> Path:
    """The `mlserver` executable of the peer environment at `venv`, installed there first if it
    is not (or holds other versions).

    Raises:
        PeerError: the environment cannot be created or the packages installed.
    """
    wanted = requirements()
    marker, executable = venv / MARKER, venv / "bin" / MLSERVER
    if marker.exists() and executable.exists():
        try:
            if json.loads(marker.read_text()).get("requirements") == wanted:
                return executable
        except ValueError:
            pass  # a marker cut short: install again
    say(f"installing the peer ({', '.join(wanted)}) into {venv}: once, reused after")
    venv.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    create_venv(venv)
    pip_install(venv, wanted)
    if not executable.exists():
        raise PeerError(f"{executable} is missing after installing {' '.join(wanted)}")
    marker.write_text(json.dumps({"requirements": wanted}, indent=1) + "\n")
    return executable


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now (for a server that takes its ports
    from its settings)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tensors(specs: tuple[TensorSpec, ...]) -> list[dict]:
    """MLServer's metadata of tensors: name, V2 datatype, shape (-1 where dynamic)."""
    return [
        {
            "name": spec.name,
            "datatype": datatype_of(spec.dtype).name,
            "shape": [-1 if size is None else size for size in (None, *spec.shape[1:])],
        }
        for spec in specs
    ]


def write_files(root: Path, model: Model, ports: list[int]) -> None:
    """MLServer's settings, the model's settings and the custom runtime, under `root`; `ports`
    are (gRPC, HTTP, metrics)."""
    grpc_port, http_port, metrics_port = ports
    settings = {
        "debug": False,
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_port": metrics_port,
        "metrics_dir": str(root / ".metrics"),
    }
    folder = root / "models" / MODEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    model_settings = {
        "name": MODEL_NAME,
        "implementation": f"{RUNTIME_MODULE}.OnnxModel",
        "parameters": {"uri": str(Path(model.path).resolve()), "version": model.version},
        "inputs": _tensors(model.inputs),
        "outputs": _tensors(model.outputs),
    }
    (folder / "model-settings.json").write_text(json.dumps(model_settings, indent=1) + "\n")
    (folder / f"{RUNTIME_MODULE}.py").write_text(RUNTIME_SOURCE.read_text())


def spec(executable: Path, root: Path, ports: list[int]) -> ServerSpec:
    """How to start MLServer on the files `write_files` put under `root`."""
    grpc_port, http_port, _ = ports
    ready = (
        f"Loaded model '{MODEL_NAME}'",
        f"gRPC server running on http://127.0.0.1:{grpc_port}",
        f"Uvicorn running on http://127.0.0.1:{http_port}",
    )
    command = (str(executable), "start", str(root))
    return ServerSpec(
        MLSERVER, command, workloads=PEER_WORKLOADS, ports=(grpc_port, http_port), ready=ready
    )


def prepare(
    cache: Path | None, root: Path, model: Model, say: Callable[[str], None]
) -> tuple[ServerSpec, dict[str, object]]:
    """Install (or reuse) the peer, write its files under `root`; return how to start it and
    what to record of it.

    Raises:
        PeerError: it cannot be installed.
    """
    venv = cache_dir(cache)
    executable = ensure(venv, say)
    ports = free_ports(3)
    write_files(root, model, ports)
    info = {"name": MLSERVER, "version": MLSERVER_VERSION, "venv": str(venv)}
    info["requirements"] = requirements()
    return spec(executable, root, ports), info
