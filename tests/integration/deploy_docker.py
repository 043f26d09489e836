"""A throw-away Docker engine, a registry-free base image and an offline wheelhouse, for tests.

No image registry is reachable here, so nothing is pulled:
- `DockerEngine` runs dockerd with all its state in a temporary directory, no firewall or sysctl
  changes, and on `stop()` leaves nothing behind (processes, mounts, network links, files).
- `base_rootfs_tarball` debootstraps a minimal Debian bookworm with Python 3.11 (plus the host's
  extra CA certificates), cached as a tarball keyed by everything that went into it; the engine
  `docker import`s it as the Dockerfiles' BASE_IMAGE.
- `wheelhouse` has the host's pip download every wheel the images install (torch resolves to the
  local CPU build), cached by the requirements; builds then run `pip install --no-index`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from tests.integration.deploy_tools import REPO, run, skip_or_fail, tail, wait_for

SUITE = "bookworm"  # Debian 12: Python 3.11, the project's interpreter
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_IMAGE = "local/python:3.11-bookworm"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
RECIPE_VERSION = "1"  # bump to invalidate cached root file systems
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# overlay2 layers carry whiteouts (device nodes) and opaque-directory xattrs: keep them all.
TAR_FLAGS = ("--numeric-owner", "--xattrs", "--xattrs-include=*")
SNAPSHOT_MIN_FREE = 20 * 2**30  # bytes free before a (~4 GB) image snapshot is written
TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")


def cache_dir() -> Path:
    """Where the base root file system and wheels are kept between runs."""
    configured = os.environ.get("FOLDSERVE_TEST_CACHE")
    base = Path(configured) if configured else Path.home() / ".cache" / "foldserve-tests"
    base.mkdir(parents=True, exist_ok=True)
    return base


# --- base image -------------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror the host's apt uses (FOLDSERVE_DEBIAN_MIRROR overrides)."""
    if os.environ.get("FOLDSERVE_DEBIAN_MIRROR"):
        return os.environ["FOLDSERVE_DEBIAN_MIRROR"]
    sources = sorted(Path("/etc/apt").glob("sources.list.d/*.sources"))
    for path in sources:  # deb822 stanzas
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.MULTILINE))
            suites = fields.get("Suites", "").split()
            if "deb" in fields.get("Types", "").split() and SUITE in suites:
                return fields["URIs"].split()[0]
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt").glob("sources.list.d/*.list")]:
        if path.is_file():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                    return next(p for p in parts[1:] if not p.startswith("["))
    return "http://deb.debian.org/debian"


def _host_ca_certificates() -> list[Path]:
    return sorted(HOST_CA_DIR.rglob("*.crt")) if HOST_CA_DIR.is_dir() else []


def base_rootfs_tarball(debootstrap: str, log: Path) -> Path:
    """A tarball of a minimal bookworm with Python 3.11 and the host's extra CA certificates.

    Cached under `cache_dir()` by a key over the suite, mirror, packages, certificates and
    recipe version; built with debootstrap (about a minute) when absent.
    """
    mirror = debian_mirror()
    certificates = _host_ca_certificates()
    key_material = {
        "suite": SUITE,
        "mirror": mirror,
        "packages": BASE_PACKAGES,
        "certificates": [hashlib.sha256(p.read_bytes()).hexdigest() for p in certificates],
        "recipe": RECIPE_VERSION,
        "arch": platform.machine(),
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:16]
    tarball = cache_dir() / f"rootfs-{SUITE}-{key}.tar"
    if tarball.is_file():
        return tarball
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir()))
    try:
        rootfs = work / "rootfs"
        with log.open("a") as sink:
            subprocess.run(
                [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                 SUITE, str(rootfs), mirror],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                timeout=900, check=True,
            )  # fmt: skip
        for relative in TRIM:
            shutil.rmtree(rootfs / relative, ignore_errors=True)
        for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
            for path in rootfs.glob(pattern):
                if path.is_file():
                    path.unlink()
        # The host's extra CAs (e.g. a TLS-intercepting proxy's), so pip and apt inside builds
        # that do use the network trust what the host trusts.
        target = rootfs / "usr/local/share/ca-certificates"
        target.mkdir(parents=True, exist_ok=True)
        for certificate in certificates:
            shutil.copy2(certificate, target / certificate.name)
        run(["chroot", str(rootfs), "update-ca-certificates"], timeout=120)
        partial = work / "rootfs.tar"
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300)
        os.replace(partial, tarball)
    finally:
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    return tarball


# --- wheels -----------------------------------------------------------------------------------


def image_requirements() -> list[str]:
    """Everything the two images pip-install: the build backend, serving and training deps."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    build = project["build-system"]["requires"]
    serving = project["project"]["dependencies"]
    return [*build, *serving, *project["project"]["optional-dependencies"]["train"]]


def wheelhouse(log: Path) -> Path:
    """A directory of wheels for every image requirement, downloaded by the host's pip (cached)."""
    requirements = image_requirements()
    key_material = [requirements, sys.version_info[:2], platform.machine()]
    key = hashlib.sha256(json.dumps(key_material).encode()).hexdigest()[:16]
    wheels = cache_dir() / f"wheels-{key}"
    if (wheels / ".complete").is_file():
        return wheels
    partial = cache_dir() / f"wheels-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    with log.open("a") as sink:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-d", str(partial),
             *requirements],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            timeout=1200, check=True,
        )  # fmt: skip
    (partial / ".complete").write_text("\n".join(requirements) + "\n")
    shutil.rmtree(wheels, ignore_errors=True)
    os.replace(partial, wheels)
    return wheels


def project_copy(destination: Path, wheels: Path) -> Path:
    """Copy the working tree (sources and deploy files, no venv or VCS) with the wheels inside."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "models", "runs", "__pycache__", ".pytest_cache", ".ruff_cache",
        ".hypothesis", "build", "dist", "*.egg-info", "*.whl",
    )  # fmt: skip
    shutil.copytree(REPO, destination, ignore=ignore, symlinks=True)
    target = destination / "deploy" / "docker" / "wheels"
    for wheel in wheels.glob("*.whl"):
        try:
            os.link(wheel, target / wheel.name)
        except OSError:  # another file system
            shutil.copy2(wheel, target / wheel.name)
    return destination


def images_key(project: Path, rootfs: Path, wheels: Path, *binaries: str) -> str:
    """A key over everything the stack's images are built from (context, compose file, base,
    wheels, the Prometheus and HAProxy binaries): equal keys mean `up --build` would rebuild the
    same images."""
    digest = hashlib.sha256()
    digest.update(f"{rootfs.name} {wheels.name}\n".encode())
    for binary in binaries:
        digest.update(hashlib.sha256(Path(binary).read_bytes()).digest())
    inputs = [project / name for name in ("pyproject.toml", "README.md", ".dockerignore")]
    inputs.append(project / "docker-compose.yml")
    for folder in ("service", "training", "deploy/docker"):
        inputs += sorted(p for p in (project / folder).rglob("*") if p.is_file())
    for path in inputs:
        if path.suffix in (".pyc", ".whl") or not path.is_file():
            continue
        digest.update(f"{path.relative_to(project)}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


# --- engine -----------------------------------------------------------------------------------


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    mounts = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                mounts.append(point)
    return mounts


def unmount_under(path: Path) -> None:
    """Unmount everything mounted at or below `path`, deepest first."""
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        if subprocess.run(["umount", point], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _processes_using(path: Path) -> list[int]:
    """PIDs whose command line mentions `path` (the engine's containerd and shims)."""
    marker = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class DockerEngine:
    """dockerd with its data, exec root and socket in one temporary directory.

    `start()` skips the test (fails it in CI) when the engine cannot run here, e.g. without
    root. `stop()` is idempotent and removes everything the engine made on the host.
    """

    def __init__(self, dockerd: str, docker: str, seed: Path | None = None):
        self.dockerd = dockerd
        self.seed = seed
        self.docker_bin = docker
        self.root = Path(tempfile.mkdtemp(prefix="fsd-", dir="/tmp"))  # short: socket paths
        self.log = self.root / "dockerd.log"
        self.process: subprocess.Popen | None = None
        self._links_before = _links()
        self.timings: dict[str, float] = {}

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    def env(self, **extra: str) -> dict[str, str]:
        """An environment whose docker and docker-compose talk to this engine (legacy builder)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(
            DOCKER_HOST=f"unix://{self.socket}",
            DOCKER_BUILDKIT="0",
            COMPOSE_DOCKER_CLI_BUILD="0",
            COMPOSE_HTTP_TIMEOUT="600",
            **extra,
        )
        return env

    def start(self, timeout: float = 60) -> None:
        if os.geteuid() != 0:
            self.stop()
            skip_or_fail("a Docker engine needs root here (dockerd started by the test)")
        if self.seed is not None:  # a snapshot of an earlier run's images and build cache
            (self.root / "data").mkdir()
            run(
                ["tar", *TAR_FLAGS, "-C", str(self.root / "data"), "-xf", str(self.seed)],
                timeout=600,
            )
        command = [
            self.dockerd,
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--host=unix://{self.socket}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            # No host firewall or sysctl changes: published ports use the userland proxy, and
            # containers talk over their compose network's bridge.
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            # The sandbox may not raise limits; without these, containers fail to start.
            "--default-ulimit=nofile=1024:1024",
            "--default-ulimit=nproc=1024:1024",
        ]
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            wait_for(self._ping, timeout=timeout, what="dockerd to answer", interval=0.2)
        except (AssertionError, RuntimeError) as exc:
            logs = tail(self.log)
            self.stop()
            skip_or_fail(f"the Docker engine did not start: {exc}\n{logs}")

    def _ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"dockerd exited {self.process.returncode}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(self.socket))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)

    def docker(self, *args: str, timeout: float = 300, check: bool = True):
        return run([self.docker_bin, *args], timeout=timeout, env=self.env(), check=check)

    def import_rootfs(self, tarball: Path, tag: str) -> None:
        self.docker(
            "import", "--change", f"ENV PATH={IMAGE_PATH}", "--change", "ENV LANG=C.UTF-8",
            "--change", 'CMD ["python3"]', str(tarball), tag,
        )  # fmt: skip

    def build_prometheus_image(self, prometheus: str, base: str, tag: str) -> None:
        """A Prometheus image without a registry: the host's (Debian's) binary on our base."""
        context = self.root / "prometheus-image"
        context.mkdir()
        shutil.copy2(prometheus, context / "prometheus")
        (context / "Dockerfile").write_text(
            "ARG BASE_IMAGE\n"
            "FROM ${BASE_IMAGE}\n"
            "COPY prometheus /bin/prometheus\n"
            "RUN mkdir -p /prometheus && chown 65534:65534 /prometheus\n"
            "USER 65534:65534\n"
            'ENTRYPOINT ["/bin/prometheus"]\n'
        )
        self.docker("build", "--build-arg", f"BASE_IMAGE={base}", "-t", tag, str(context))

    def shutdown_daemon(self) -> None:
        """Stop dockerd (and with it containerd); the state directory stays."""
        started = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        deadline = time.monotonic() + 15
        while (leftovers := _processes_using(self.root)) and time.monotonic() < deadline:
            for pid in leftovers:  # containerd and shims of this engine only
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if time.monotonic() < deadline - 5 else 9)
            time.sleep(0.5)
        self.timings["dockerd_exit"] = round(time.monotonic() - started, 1)

    def stop(self) -> None:
        """Stop dockerd and remove every trace: processes, mounts, network links, files."""
        self.shutdown_daemon()
        started = time.monotonic()
        unmount_under(self.root)
        for link in sorted(_links() - self._links_before):  # docker0, br-*, veth*
            subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        self.timings["cleanup"] = round(time.monotonic() - started, 1)

    def save_snapshot(self, path: Path) -> None:
        """Archive the stopped engine's data (images, build cache) to seed later engines.

        Best effort: a full disk leaves no snapshot, not a failed test.
        """
        assert self.process is None or self.process.poll() is not None, "stop dockerd first"
        partial = path.with_suffix(".partial")
        free = shutil.disk_usage(path.parent).free
        if free < SNAPSHOT_MIN_FREE:  # a few GB: never fill the disk for a cache
            print(f"[containers] no image snapshot saved: {free / 2**30:.1f} GiB free")
            return
        try:
            run(["tar", *TAR_FLAGS, "-C", str(self.root / "data"), "-cf", str(partial), "."],
                timeout=600)  # fmt: skip
            for old in path.parent.glob("docker-images-*.tar"):
                old.unlink()
            os.replace(partial, path)
        except (AssertionError, OSError, subprocess.TimeoutExpired) as exc:
            print(f"[containers] no image snapshot saved: {exc}")
            partial.unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """What of the engine is still on the host (empty after a clean stop)."""
        found = [f"process {pid}" for pid in _processes_using(self.root)]
        found += [f"mount {point}" for point in _mounts_under(self.root)]
        found += [f"link {link}" for link in sorted(_links() - self._links_before)]
        if self.root.exists():
            found.append(f"directory {self.root}")
        return found
