"""The reference pages generated from the code match the code, and `foldserve serve --help` and
the settings page list the same settings with the same variables and defaults."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys

from tests.service.subprocess_server import REPO

PAGES = runpy.run_path(str(REPO / "docs" / "reference_pages.py"))


def test_every_generated_page_is_up_to_date() -> None:
    stale = [
        str(path.relative_to(REPO))
        for path, text in PAGES["pages"]().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run `python docs/reference_pages.py` and commit: {stale}"


def _help_settings() -> dict[str, tuple[str, str]]:
    """flag -> (variable, default) as `foldserve serve --help` shows them."""
    text = subprocess.run(
        [sys.executable, "-m", "foldserve.cli", "serve", "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
    ).stdout  # fmt: skip
    text = re.sub(r"\s+", " ", text)
    found = {}
    # A flag, its placeholder (upper case, or on|off), its help, then [env VAR, default D].
    pattern = r"(--[a-z-]+) (?:[A-Z][^ ]*|on\|off) .*?\[env (\w+)(?:, default ([^\]]+)|: [^\]]+)\]"
    for flag, env, default in re.findall(pattern, text):
        found[flag] = (env, default or "none")
    return found


def _page_settings() -> dict[str, tuple[str, str]]:
    text = (REPO / "docs" / "reference" / "settings.md").read_text()
    rows = re.findall(r"^\| `(--[a-z-]+) [^`]+` \| `(\w+)` \| ([^|]+) \|", text, flags=re.M)
    return {flag: (env, default.strip()) for flag, env, default in rows}


def test_serve_help_and_the_settings_page_agree() -> None:
    shown, documented = _help_settings(), _page_settings()
    assert len(documented) >= 20
    assert shown == documented
