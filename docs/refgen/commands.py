"""The settings page: every flag of every `foldserve` command, read from the parsers themselves.

`foldserve serve`'s settings are declared once (`foldserve.server.config.SETTINGS`), each with its
environment variable; every other command's flags are read from its argparse parser.
"""

from __future__ import annotations

import argparse

from foldserve.cli import build_parser
from foldserve.server.config import SETTINGS, settings_markdown
from refgen.compose import compose_section

# Commands in the order a reader meets them: serve and call, then train and fold, then tools.
ORDER = ("serve", "predict", "health", "train", "export", "fold", "calibrate", "adapt", "lab")
ORDER += ("bench", "fuzz", "shift-eval", "chaos", "repository-scale")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _default(action: argparse.Action) -> str:
    if action.nargs == 0:  # a switch: present or not
        return ""
    value = action.default
    if value is None or value == "":  # nothing, or a default the help text explains
        return ""
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def _flags_table(parser: argparse.ArgumentParser) -> str:
    formatter = parser._get_formatter()
    rows = ["| argument | default | what it does |", "| --- | --- | --- |"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        invocation = formatter._format_action_invocation(action)
        text = (action.help or "").replace("%%", "%")
        # A code span may hold a pipe: Markdown's tables do not split cells inside one.
        rows.append(f"| `{invocation}` | {_cell(_default(action))} | {_cell(text)} |")
    return "\n".join(rows) + "\n"


def _serve_section(parser: argparse.ArgumentParser) -> str:
    return (
        f"{parser.description}\n\n"
        "The variable of each flag is in the table; a variable set to an empty value counts as "
        f"not set. {len(SETTINGS)} settings; the bearer token itself is read only from the "
        "environment (`FOLDSERVE_AUTH_TOKEN`), never from a flag.\n\n" + settings_markdown()
    )


def settings_page() -> str:
    """docs/reference/settings.md."""
    commands = _subcommands()
    missing = sorted(set(commands) - set(ORDER))
    assert not missing, f"docs/refgen/commands.py: put {missing} into ORDER"
    parts = [
        "# Settings of every command\n\n"
        "Generated from the commands' own parsers (`python docs/reference_pages.py`); "
        "`foldserve COMMAND --help` shows the same. `train`, `export`, `fold` and `lab` need the "
        "training extra (`pip install -e '.[train]'`, which `make venv` installs).\n"
    ]
    for name in ORDER:
        parser = commands[name]
        body = _serve_section(parser) if name == "serve" else _other_section(parser)
        parts.append(f"## foldserve {name}\n\n{body}")
    parts.append(compose_section())
    return "\n".join(parts)


def _other_section(parser: argparse.ArgumentParser) -> str:
    usage = " ".join(parser.format_usage().split())
    intro = f"{parser.description}\n\n" if parser.description else ""
    return f"{intro}```text\n{usage}\n```\n\n{_flags_table(parser)}"
