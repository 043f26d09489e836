"""The reference pages generated from the code: `python docs/reference_pages.py` writes them,
tests/test_docs_reference.py fails when a page and the code drift apart."""

from __future__ import annotations

import sys
from pathlib import Path

from foldserve.server.config import SETTINGS, settings_markdown

DOCS = Path(__file__).resolve().parent


def settings_page() -> str:
    return (
        "# Settings of `foldserve serve`\n\n"
        "Every setting has a flag and an environment variable; a flag wins over the variable, "
        "the variable over the default. `foldserve serve --help` shows the same list. "
        f"{len(SETTINGS)} settings; the bearer token itself is read only from the environment "
        "(`FOLDSERVE_AUTH_TOKEN`), never from a flag.\n\n" + settings_markdown()
    )


def pages() -> dict[Path, str]:
    """Every generated page by its path, with its text."""
    return {DOCS / "reference" / "settings.md": settings_page()}


def main() -> int:
    for path, text in pages().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
