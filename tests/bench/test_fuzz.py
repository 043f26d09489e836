"""`foldserve fuzz`: a short run against a real server keeps the contract, and a server that
breaks it is caught."""

from __future__ import annotations

import argparse

import pytest

from foldserve.bench.fuzz.generate import PREDICT, Requests
from foldserve.bench.fuzz.oracle import Served, is_valid
from foldserve.bench.fuzz.run import Fuzzer, run_fuzz, verdict
from tests.service.conftest import Served as Running


def test_a_short_run_keeps_the_contract(shared_server: Running, capsys) -> None:
    args = argparse.Namespace(
        target=f"127.0.0.1:{shared_server.port}",
        calls=300,
        seed=7,
        timeout=5.0,
        max_message_bytes=4 * 1024 * 1024,
    )
    assert run_fuzz(args) == 0
    out = capsys.readouterr().out
    assert "calls: 300 (valid " in out
    assert "contract breaks: 0; hangs: 0" in out
    assert "wrong answers: 0" in out


@pytest.mark.parametrize(
    ("status", "valid", "broken"),
    [
        ("OK", True, False),
        ("INVALID_ARGUMENT", False, False),
        ("NOT_FOUND", False, False),
        ("INTERNAL", False, True),
        ("UNKNOWN", True, True),
        ("OK", False, True),
        ("INVALID_ARGUMENT", True, True),
        ("UNAVAILABLE", False, True),
    ],
)
def test_verdicts(status: str, valid: bool, broken: bool) -> None:
    assert (verdict(status, valid) is not None) is broken


SERVED = Served("foldserve", ("1",), "input", (64,), 10, ("logits", "probabilities"), 1 << 20)


def test_the_generator_is_seeded_and_mixes_valid_and_invalid_calls() -> None:
    first = [Requests(SERVED, 3).draw() for _ in range(1)]
    again = [Requests(SERVED, 3).draw() for _ in range(1)]
    assert first == again
    draws = Requests(SERVED, 3)
    calls = [draws.draw() for _ in range(400)]
    valid = sum(is_valid(method, data, SERVED) for method, data in calls)
    assert 80 < valid < 320, valid


class _AlwaysOk:
    """A channel whose every call succeeds, as a server that checks nothing would."""

    def unary_unary(self, method: str):
        return lambda data, timeout: b""


def test_a_server_that_accepts_everything_is_caught() -> None:
    fuzzer = Fuzzer(_AlwaysOk(), SERVED, seed=1, timeout=1.0)  # type: ignore[arg-type]
    fuzzer.call(PREDICT, b"\xff\xff")
    fuzzer.call(PREDICT, b"")
    assert len(fuzzer.report.breaks) == 2
    assert "OK for a request that cannot be valid" in fuzzer.report.breaks[0]
    assert not fuzzer.report.ok


def test_an_unreachable_target_fails_cleanly(capsys) -> None:
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    args = argparse.Namespace(
        target=f"127.0.0.1:{port}", calls=1, seed=0, timeout=1.0, max_message_bytes=1 << 20
    )
    assert run_fuzz(args) == 1
    assert "UNAVAILABLE" in capsys.readouterr().out
