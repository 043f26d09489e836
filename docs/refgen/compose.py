"""The compose section of the settings page: every variable docker-compose.yml reads, with its
default and the services that read it, from the file itself."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
# `${NAME:-default}` or `${NAME}`, as compose interpolates them.
VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _variables(value: object, found: dict[str, str], uses: dict[str, set[str]], where: str):
    if isinstance(value, dict):
        for key, item in value.items():
            _variables(item, found, uses, where)
            _variables(key, found, uses, where)
    elif isinstance(value, list):
        for item in value:
            _variables(item, found, uses, where)
    elif isinstance(value, str):
        for name, default in VARIABLE.findall(value):
            found.setdefault(name, default)
            uses.setdefault(name, set()).add(where)


def compose_section() -> str:
    """`## docker-compose.yml`: one row per variable, in name order."""
    document = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, str] = {}
    uses: dict[str, set[str]] = {}
    for name, service in document["services"].items():  # YAML anchors are expanded here
        _variables(service, found, uses, name)
    rows = ["| variable | default | read by |", "| --- | --- | --- |"]
    for name in sorted(found):
        default = f"`{found[name]}`" if found[name] else "empty"
        rows.append(f"| `{name}` | {default} | {', '.join(sorted(uses[name]))} |")
    return (
        "## docker-compose.yml\n\n"
        "The compose stack reads these variables from the environment or a `.env` file beside "
        "`docker-compose.yml`; a `FOLDSERVE_*` variable the server reads is the `foldserve "
        "serve` setting of that name (above), passed through. What the stack is and how to change "
        "it: [Deployment](../guides/deployment.md).\n\n" + "\n".join(rows) + "\n"
    )
