"""`foldserve COMMAND --help` for the serving commands: every default shown, the label rule."""

from __future__ import annotations

import re

import pytest

from foldserve.bench.suite.plan import BENCH_FULL, BENCH_SHORT
from foldserve.cli import main
from foldserve.client.commands import HEALTH_TIMEOUT_SECONDS, PREDICT_TIMEOUT_SECONDS, TARGET
from foldserve.contract.data import DIGITS, LABEL_COLUMN


def help_text(command: str, capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    # argparse wraps lines to the terminal width; compare words, not lines.
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def test_predict_help_shows_defaults_and_the_label_rule(capsys: pytest.CaptureFixture) -> None:
    text = help_text("predict", capsys)
    for flag, default in [
        ("--target HOST:PORT", TARGET),
        ("--data SOURCE", DIGITS),
        ("--label-column NAME", LABEL_COLUMN),
        ("--format {text,json}", "text"),
        ("--timeout SECONDS", PREDICT_TIMEOUT_SECONDS),
    ]:
        entry = text.split(f" {flag} ", 1)[1].split(" --", 1)[0]  # the flag's help
        assert entry.endswith(f"(default: {default})"), (flag, entry)
    assert '3 and "3" both mean the class labelled "3", never the class at index 3' in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_health_and_bench_help_describe_and_show_defaults(capsys: pytest.CaptureFixture) -> None:
    health = help_text("health", capsys)
    assert "exit 0 when it answers SERVING" in health
    assert f"(default: {HEALTH_TIMEOUT_SECONDS})" in health
    assert f"(default: {TARGET})" in health
    bench = help_text("bench", capsys)
    assert "Start the echo floor" in bench
    full, short = BENCH_FULL, BENCH_SHORT
    assert f"(default {full['calls']}; --short {short['calls']})" in bench


def test_serve_help_shows_placeholders_and_on_off(capsys: pytest.CaptureFixture) -> None:
    """Already right (service/server/config.py); kept so it stays right."""
    text = help_text("serve", capsys)
    assert "--model PATH" in text and "--port PORT" in text
    assert "FOLDSERVE_REFLECTION, default on" in text
    assert "default True" not in text
