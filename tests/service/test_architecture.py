"""The house rules of shared/DESIGN.md, checked on the code: arrows point one way (wiring →
adapters → core → contract), the core knows no gRPC, and service/ never imports torch or training/.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.subprocess_server import REPO

SERVICE = REPO / "service"
# Each part of service/ may import only the parts on lower floors (and itself).
FLOORS = {
    "contract": 0,
    "defaults": 0,
    "version": 0,
    "runtime": 0,
    "datasets": 1,
    "shift_metrics": 0,  # the shift monitor's collector: imports nothing of ours; metrics uses it
    "metrics": 1,
    "core": 2,
    "api": 3,
    "server": 4,
    "tools": 4,
    "cli": 5,
}


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


def test_every_part_of_service_has_a_floor() -> None:
    parts = {_part(path) for path in _modules(SERVICE)} - {"__init__"}
    assert parts == set(FLOORS), "a new part of service/ needs a floor in FLOORS"


@pytest.mark.parametrize("path", _modules(SERVICE), ids=lambda p: str(p.relative_to(REPO)))
def test_arrows_point_down(path: Path) -> None:
    own = _part(path)
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in ("torch", "training"), f"{path} imports {name}"
        if top != "service" or name.count(".") == 0:
            continue
        target = name.split(".")[1]
        if target == "_proto" or target not in FLOORS or target == own:
            continue
        assert FLOORS[target] < FLOORS[own], f"{path} ({own}) imports {name} ({target})"


def test_the_core_and_the_contract_import_no_grpc_or_torch() -> None:
    modules = [
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for package in ("core", "contract")
        for path in _modules(SERVICE / package)
    ]
    assert "service.core.runner" in modules and "service.contract.metadata" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'grpc', 'torch', 'training'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
