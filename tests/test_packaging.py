"""The distribution installs one name: a wheel built from the tree holds only `foldserve` and its
dist-info at the top level, every package of the tree is in it, and the `foldserve` command of a
fresh environment that has only that wheel (its dependencies taken from this one) serves."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.service.model_files import write_tiny_model
from tests.service.subprocess_server import REPO

ROOTS = {"service": "foldserve", "training": "foldserve.training", "bench": "foldserve.bench"}


def _tree_packages() -> set[str]:
    """Every package of the tree, by its installed name."""
    found = set()
    for folder, name in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *parts)))
    return found


def test_pyproject_lists_every_package_of_the_tree() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _tree_packages()
    assert config["package-dir"] == {v: k for k, v in ROOTS.items()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the tree's files (what git tracks or would track)."""
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, cwd=REPO, check=True,
    ).stdout.split()  # fmt: skip
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", str(source), "-w", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("foldserve-*.whl")
    return built


def test_the_wheel_installs_only_foldserve(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"foldserve", wheel.name.split("-py3")[0] + ".dist-info"}
    packages = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("__init__.py")}
    assert packages == _tree_packages()
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "foldserve = foldserve.cli:main" in entry_points


def test_a_fresh_environment_with_only_the_wheel_serves(wheel: Path, tmp_path: Path) -> None:
    tiny_model_path = write_tiny_model(tmp_path / "model.onnx")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = next((venv / "lib").glob("python3*/site-packages"))
    # The dependencies come from this environment; foldserve only from the wheel (this
    # environment's own editable install is a finder that a plain path entry does not run).
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--no-deps", "--disable-pip-version-check", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    command = venv / "bin" / "foldserve"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import foldserve; print(foldserve.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(purelib)), where
    listed = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout
    for name in ("serve", "train", "fold", "calibrate", "lab", "bench", "fuzz", "shift-eval"):
        assert f"    {name}" in listed, listed
    served = subprocess.Popen(
        [str(command), "serve", "--model", str(tiny_model_path), "--host", "127.0.0.1",
         "--port", "0", "--http-port", "0", "--metrics-port", "0", "--workers", "1"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        line = ""
        while "grpc_port=" not in line:
            line = served.stderr.readline()  # type: ignore[union-attr]
            assert line, "the server exited before it served"
        port = line.split("grpc_port=")[1].split()[0]
        health = subprocess.run(
            [str(command), "health", "--target", f"127.0.0.1:{port}"],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
        )  # fmt: skip
        assert health.returncode == 0, health.stderr
    finally:
        served.terminate()
        served.wait(30)
