"""Settings: flags beat FOLDSERVE_* variables, which beat defaults."""

from __future__ import annotations

import argparse

import pytest

from foldserve.server.config import ConfigError, ServeConfig, add_serve_arguments, resolve


def parse(*argv: str, environ: dict | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser, {"FOLDSERVE_MODEL": "from-env"} if environ is None else environ)
    return parser.parse_args(argv)


def test_defaults() -> None:
    from foldserve.server.setting_types import available_cpus

    config = resolve(parse("--model", "m.onnx"), environ={})
    assert config == ServeConfig(model="m.onnx", workers=available_cpus())
    assert (config.host, config.port, config.metrics_port) == ("0.0.0.0", 50051, 9100)
    assert config.model_name == "foldserve"
    assert config.reflection is True


def test_environment_then_flags() -> None:
    environ = {
        "FOLDSERVE_MODEL": "env.onnx",
        "FOLDSERVE_MODEL_NAME": "digits",
        "FOLDSERVE_HOST": "127.0.0.1",
        "FOLDSERVE_PORT": "6000",
        "FOLDSERVE_METRICS_PORT": "6001",
        "FOLDSERVE_MAX_MESSAGE_BYTES": "1000",
        "FOLDSERVE_MAX_CONCURRENT_RPCS": "3",
        "FOLDSERVE_LOG_LEVEL": "debug",
        "FOLDSERVE_LOG_FORMAT": "JSON",
        "FOLDSERVE_REFLECTION": "off",
        "FOLDSERVE_GRACE_SECONDS": "2.5",
        "FOLDSERVE_WORKERS": "3",
    }
    config = resolve(parse(), environ=environ)
    assert config == ServeConfig(
        model="env.onnx",
        model_name="digits",
        host="127.0.0.1",
        port=6000,
        metrics_port=6001,
        max_message_bytes=1000,
        max_concurrent_rpcs=3,
        log_level="DEBUG",
        log_format="json",
        reflection=False,
        grace_seconds=2.5,
        workers=3,
    )
    flagged = resolve(parse("--port", "7000", "--reflection", "on"), environ=environ)
    assert flagged.port == 7000
    assert flagged.reflection is True
    assert flagged.metrics_port == 6001


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ((), {}, "what to serve: pass --model PATH"),
        (("--model", "m", "--model-repository", "d"), {}, "exactly one of them"),
        (("--model-repository", "d", "--load-model", "a"), {}, "--load-model goes with"),
        (("--model-repository", "d", "--model-control-mode", "x"), {}, "not one of none, poll"),
        (("--model", "m", "--port", "70000"), {}, "--port: 70000 is not a port"),
        (("--model", "m"), {"FOLDSERVE_PORT": "x"}, "FOLDSERVE_PORT: 'x' is not a whole number"),
        (("--model", "m", "--port", "abc"), {}, "--port: 'abc' is not a whole number"),
        (("--model", "m", "--log-format", "xml"), {}, "--log-format: 'xml' is not one of"),
        (("--model", "m"), {"FOLDSERVE_REFLECTION": "maybe"}, "is not on or off"),
        (("--model", "m", "--grace-seconds", "-1"), {}, "not a finite non-negative number"),
        (("--model", "m"), {"FOLDSERVE_GRACE_SECONDS": "inf"}, "inf is not a finite"),
        (("--model", "m", "--max-concurrent-rpcs", "0"), {}, "not a positive integer"),
    ],
)
def test_bad_values_name_the_setting(argv: tuple, environ: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(parse(*argv), environ=environ)


def test_what_to_serve_comes_from_a_flag_or_the_environment() -> None:
    with pytest.raises(ConfigError, match="what to serve"):
        resolve(parse(environ={}), environ={})
    assert resolve(parse(environ={}), environ={"FOLDSERVE_MODEL": "env.onnx"}).model == "env.onnx"
    repository = resolve(parse("--model-repository", "models"), environ={})
    assert (repository.model, repository.model_repository) == (None, "models")


def test_help_shows_placeholders_and_defaults_as_written() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser, {})
    text = parser.format_help()
    assert "--model PATH" in text and "FOLDSERVE_MODEL" in text
    assert "--reflection on|off" in text and "default on]" in text
    assert "--port PORT" in text and "default 50051]" in text
    assert "FOLDSERVE_PORT PORT" not in text
