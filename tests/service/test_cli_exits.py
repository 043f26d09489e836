"""How `foldserve` ends when the user stops it (closed pipe, Ctrl-C): no traceback."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

from tests.service.conftest import Served
from tests.service.subprocess_server import REPO, env, foldserve_command

# Bounds every wait in this module: a hung process fails the test instead of hanging it.
WAIT_SECONDS = 60


def test_a_reader_that_closes_early_ends_predict_quietly(
    shared_server: Served, tmp_path: Path
) -> None:
    """`foldserve predict | head -1`: exit 141 (as if killed by SIGPIPE), nothing on stderr."""
    examples = tmp_path / "examples.json"
    # Far more output than the shrunken pipe plus Python's buffer hold, so the writer must
    # block and then find the pipe closed.
    examples.write_text(json.dumps([[0.5] * 64] * 400))
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, 4096)
    command = foldserve_command(
        "predict", "--target", f"127.0.0.1:{shared_server.port}", "--data", "-"
    )
    with examples.open() as stdin:
        process = subprocess.Popen(
            command, stdin=stdin, stdout=write_end, stderr=subprocess.PIPE, text=True,
            cwd=REPO, env=env(),
        )  # fmt: skip
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        first = json.loads(reader.readline())
    _, stderr = process.communicate(timeout=WAIT_SECONDS)
    assert first["index"] == 0
    assert stderr == ""
    assert process.returncode == 141


def test_ctrl_c_during_predict_prints_one_line(tmp_path: Path) -> None:
    """SIGINT while predict waits on a server that never answers: "interrupted", exit 130."""
    with socket.socket() as silent:  # accepts TCP connections, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(WAIT_SECONDS)
        port = silent.getsockname()[1]
        command = foldserve_command("predict", "--target", f"127.0.0.1:{port}", "--timeout", "60")
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=REPO, env=env(),
        )  # fmt: skip
        try:
            connection, _ = silent.accept()  # predict is now inside its first call
            with connection:
                process.send_signal(signal.SIGINT)
                stdout, stderr = process.communicate(timeout=WAIT_SECONDS)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(WAIT_SECONDS)
    assert (stdout, stderr) == ("", "foldserve predict: interrupted\n")
    assert process.returncode == 130
