"""The house rules of shared/DESIGN.md and docs/explanation/architecture.md, checked on the code:
arrows point one way (wiring → adapters → data plane/core → contract), the core knows no
transport, the serving package never imports torch, the training half or the measuring tools,
and `foldserve serve` imports none of them at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.subprocess_server import REPO

SERVICE = REPO / "service"
# Each part of the serving package (service/, installed as `foldserve`) may import only the parts
# on lower floors (and itself). The training half (`foldserve.training`) and the measuring tools
# (`foldserve.bench`) stand outside it: it never imports them.
FLOORS = {
    "contract": 0,
    "version": 0,
    "runtime": 0,
    "datasets": 1,
    "samples": 2,  # a sample of inputs read from files (calibrate, adapt): beside the core
    "core": 2,
    "api": 3,
    "server": 4,
    "client": 5,
    "cli": 6,
    "adapt_cli": 6,  # `foldserve adapt`: a command of the serving install, like the root one
}
OUTSIDE = ("training", "bench")
TRANSPORTS = {"grpc", "grpc_health", "grpc_reflection", "starlette", "uvicorn", "h11", "httptools"}


def _modules(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if "_proto" not in p.parts)


def _part(path: Path) -> str:
    return path.relative_to(SERVICE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """Every module name `path` imports, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_every_part_of_the_serving_package_has_a_floor() -> None:
    parts = {_part(path) for path in _modules(SERVICE)} - {"__init__"}
    assert parts == set(FLOORS), "a new part of service/ needs a floor in FLOORS"


@pytest.mark.parametrize("path", _modules(SERVICE), ids=lambda p: str(p.relative_to(REPO)))
def test_arrows_point_down(path: Path) -> None:
    own = _part(path)
    for name in _imports(path):
        top = name.split(".")[0]
        assert top != "torch", f"{path} imports {name}"
        if top != "foldserve" or name.count(".") == 0:
            continue
        target = name.split(".")[1]
        assert target not in OUTSIDE, f"{path} imports {name}"
        if target == "_proto" or target not in FLOORS or target == own:
            continue
        assert FLOORS[target] < FLOORS[own], f"{path} ({own}) imports {name} ({target})"


@pytest.mark.parametrize("package", ["core", "contract"])
def test_the_core_and_the_contract_import_no_transport(package: str) -> None:
    for path in _modules(SERVICE / package):
        tops = {name.split(".")[0] for name in _imports(path)}
        assert not tops & TRANSPORTS, f"{path} imports {sorted(tops & TRANSPORTS)}"


def test_the_core_and_the_contract_load_no_transport_or_torch() -> None:
    modules = [
        "foldserve." + ".".join(p.relative_to(SERVICE).with_suffix("").parts)
        for package in ("core", "contract")
        for p in _modules(SERVICE / package)
    ]
    modules = [name.removesuffix(".__init__") for name in modules]
    assert "foldserve.core.dataplane" in modules and "foldserve.contract.metadata" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"found = {{m.split('.')[0] for m in sys.modules}} & {set(TRANSPORTS | {'torch'})!r}\n"
        "print(sorted(found))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_foldserve_serve_imports_no_tool_training_or_torch(tmp_path: Path) -> None:
    """`foldserve serve` up to loading its model (which fails here: there is none) imports the
    whole serving path and nothing of the training half, the measuring tools or the client."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "foldserve.cli", "serve", "--model",
         str(tmp_path / "absent.onnx"), "--port", "0", "--http-port", "0", "--metrics-port", "0",
         "--workers", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "does not exist" in result.stderr, result.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "foldserve.server.app" in imported and "foldserve.core.dataplane" in imported
    outside = ("foldserve.training", "foldserve.bench", "foldserve.client", "torch")
    found = sorted(m for m in imported if m.startswith(outside))
    assert found == [], found
