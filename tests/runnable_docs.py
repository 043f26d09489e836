"""Code blocks of the docs that are run by the tests, as written.

A block is runnable when the line before its opening fence is an HTML comment (invisible on the
site and on GitHub):

- `<!-- run -->`: a call to a running server (`sh` runs in bash with `-euo pipefail`, `python`
  in the test's interpreter); it must exit 0. When a ```json block follows it, what it prints
  must have that JSON's shape (`alike`).
- `<!-- run: train -->`: makes the model the page serves (`foldserve train`, run with flags
  appended that make it fast).
- `<!-- run: serve -->`: starts the server the page's calls go to (run with its ports set free
  and one worker), once a call names a server address.
- `<!-- run: file NAME -->`: written to the file NAME, for the blocks after it (a module the
  page's commands import).

Blocks are written for the default addresses (gRPC 50051, HTTP 8000, metrics 9100 on 127.0.0.1
or localhost) and the virtual environment `make venv` makes (`.venv/bin/`); `localize` points
them at the test's server and interpreter.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
MARKED = re.compile(
    r"<!-- run(?:: (?P<role>\w+)(?: (?P<argument>[^ ]+))?)? -->\n"
    r"```(?P<language>\w+)[^\n]*\n(?P<code>.*?)```"
    r"(?:\s*```json\n(?P<shown>.*?)```)?",
    re.S,
)
DEFAULT_PORTS = {"grpc": 50051, "http": 8000, "metrics": 9100}
ADDRESS = re.compile(r"\b(?:127\.0\.0\.1|localhost):(?:50051|8000|9100)\b")


@dataclass(frozen=True)
class Block:
    """One runnable block: where it is, its role ("", "train", "serve" or "file") and the role's
    argument, its code, and the JSON the page shows it printing (None when it shows none)."""

    page: Path
    line: int
    role: str
    argument: str
    language: str
    code: str
    shown: str | None

    @property
    def calls_a_server(self) -> bool:
        return bool(ADDRESS.search(self.code))

    @property
    def name(self) -> str:
        first = self.code.strip().splitlines()[0]
        return f"{self.page.name}:{self.line}:{first[:40]}"


def blocks(page: Path) -> list[Block]:
    """Every runnable block of a page, in page order."""
    text = page.read_text()
    found = []
    for m in MARKED.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        role, argument = m["role"] or "", m["argument"] or ""
        found.append(Block(page, line, role, argument, m["language"], m["code"], m["shown"]))
    return found


def localize(code: str, ports: dict[str, int]) -> str:
    """The block pointed at `ports` (by name: grpc, http, metrics) and this interpreter's
    environment."""
    for name, port in ports.items():
        default = DEFAULT_PORTS[name]
        code = re.sub(rf"\b(?:127\.0\.0\.1|localhost):{default}\b", f"127.0.0.1:{port}", code)
    return code.replace(".venv/bin/", f"{BIN}/")


def environment() -> dict[str, str]:
    """The test's environment, without FOLDSERVE_* settings, this interpreter's bin first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLDSERVE_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def command(block: Block, ports: dict[str, int]) -> list[str]:
    code = localize(block.code, ports)
    if block.language == "python":
        return [sys.executable, "-c", code]
    assert block.language in ("sh", "bash"), f"{block.name}: cannot run {block.language}"
    return ["bash", "-euo", "pipefail", "-c", code]


def run(block: Block, cwd: Path, ports: dict[str, int], timeout: float = 60) -> str:
    """Run a call block; its stdout. Fails the test, with what it printed, unless it exits 0."""
    done = subprocess.run(
        command(block, ports), capture_output=True, text=True, cwd=cwd, env=environment(),
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{done.stderr}"
    if block.shown is not None:
        alike(json.loads(block.shown), json.loads(done.stdout))
    return done.stdout


def alike(shown: object, got: object, where: str = "") -> None:
    """`got` has the page's structure: the same keys, the same lengths of arrays of objects,
    the same JSON types, and the same error message."""
    if isinstance(shown, dict):
        assert isinstance(got, dict) and set(got) == set(shown), (where, got)
        for key in shown:
            if key == "error":
                assert got[key] == shown[key]
            alike(shown[key], got[key], f"{where}.{key}")
    elif isinstance(shown, list) and shown and isinstance(shown[0], dict | list):
        assert isinstance(got, list) and len(got) == len(shown), (where, got)
        for index, (a, b) in enumerate(zip(shown, got, strict=True)):
            alike(a, b, f"{where}[{index}]")
    elif isinstance(shown, bool | str | list):
        assert type(got) is type(shown), (where, got)
    else:
        assert isinstance(got, int | float) and not isinstance(got, bool), (where, got)
