"""`foldserve chaos --short`, run for real: every row is measured and printed with a verdict.

Whether a row meets its bound depends on the machine (restart time, p99 and memory on two busy
cores, recovery against the poll interval), so this test checks what must hold anywhere: every
row ran; no call failed but those on the killed worker (none through HAProxy), or those that
found their shared memory region unregistered (NOT_FOUND); no worker was lost to a hostile peer
and memory stayed bounded; /metrics showed only what was loaded after the reloads; every broken
repository file was refused by both workers and loaded again once mended; every shared memory
misuse was refused naming its field, nothing outside a region changed, and the server lived.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.subprocess_server import REPO, env

pytestmark = pytest.mark.integration
CHAOS_TIMEOUT_SECONDS = 120
IN_FLIGHT = 64  # foldserve chaos's default calls in flight
ROWS = 20  # kill 2, balancer 2, peers 8, reloads 2, repository 2 + 1 skipped as root, shm 3


def _rows(out: str) -> dict[str, list[str]]:
    """The final table's rows by fault, as cells."""
    table = out[out.rindex("| fault |") :]
    rows = [line.strip("|").split(" | ") for line in table.splitlines()[2:] if line.startswith("|")]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows}


def _check_reloads(fault: str, errors: str, saw: str) -> None:
    assert errors == "0", (fault, saw)
    shown = saw[saw.index("/metrics shows") :]
    if "version reloads" in fault:
        assert "20 of 20 versions loaded by both workers" in saw, saw
        assert "churn 21, 22; stay 1 (" in shown, saw
    else:
        assert "10 of 10 load/unload calls OK" in saw and "cycle" not in shown, saw


def _check_shm(fault: str, errors: str, saw: str) -> None:
    if fault.startswith("region unregistered"):
        assert re.fullmatch(r"(NOT_FOUND \d+)?", errors) or errors == "0", (fault, errors)
        assert "calls OK or NOT_FOUND only" in saw and "answers equal" in saw, saw
        assert "shared_memory_region" in saw, saw
    else:
        assert errors == "0", (fault, saw)
    if fault.startswith("offsets and sizes"):
        count = re.search(r"(\d+) of (\d+) misuses refused", saw)
        assert count and count[1] == count[2], saw
    if fault.startswith("key naming"):
        assert "read exactly its region (True)" in saw, saw
        assert "shrunk by its owner: {'INVALID_ARGUMENT'" in saw, saw
    assert "BROKEN" not in saw and "CHANGED" not in saw and "DEAD" not in saw, saw


def test_chaos_short_measures_every_row(tiny_model_path: Path) -> None:
    command = [sys.executable, "-m", "foldserve.cli", "chaos", "--short"]
    done = subprocess.run(
        [*command, "--model", str(tiny_model_path)],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=CHAOS_TIMEOUT_SECONDS,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "| fault |" in done.stdout and "harness raised" not in done.stdout, done.stderr[-3000:]
    rows = _rows(done.stdout)
    assert len(rows) == ROWS, done.stdout
    for fault, cells in rows.items():
        verdict = cells[-1]
        assert verdict in ("PASS", "FAIL") or verdict.startswith("SKIP"), cells
        if verdict.startswith("SKIP"):
            continue
        errors, saw, recovery = cells[2], cells[3], cells[4]
        if fault.startswith("SIGKILL"):
            if "HAProxy" not in fault:
                # Only calls on the killed worker's connections fail (how many depends on timing).
                assert "0 on the other worker's" in saw, cells
            elif "grpc" in fault:
                # HAProxy replays what the dead worker never answered; now and then (1 short run
                # in 4 here) the calls on its HTTP/2 connections fail UNAVAILABLE all the same.
                # The row says FAIL then; what must hold is that nothing else fails.
                assert re.fullmatch(r"0|UNAVAILABLE (\d+)", errors), cells
                assert errors == "0" or int(errors.split()[1]) <= IN_FLIGHT, cells
            else:
                assert errors == "0", cells
        elif "--workers 2" in fault:
            _check_reloads(fault, errors, saw)
        elif "(m/" in fault:
            assert errors == "0", cells
            assert saw.startswith("refused by both workers"), cells
            assert recovery.startswith("loaded again by both workers"), cells
        elif "region" in fault or "object" in fault:
            _check_shm(fault, errors, saw)
        else:  # a hostile peer
            assert errors == "0", cells
            assert "workers lost 0" in saw, cells
            peak = float(re.search(r"RSS peak ([+-][\d.]+) MB", recovery).group(1))
            assert peak < 64, cells
