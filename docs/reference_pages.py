"""The reference pages generated from the code: `python docs/reference_pages.py` writes them,
tests/test_docs_reference.py fails when a page and the code drift apart.

Each page has one generator in docs/refgen/, which reads what the code declares (parsers,
metric families, the model-file contract, status maps, the .proto files), never a copy of it.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))

from refgen.commands import settings_page  # noqa: E402
from refgen.errors import errors_page  # noqa: E402
from refgen.metrics import metrics_page  # noqa: E402
from refgen.model_file import model_file_page  # noqa: E402
from refgen.protos import protos_page  # noqa: E402

REFERENCE = DOCS / "reference"


def pages() -> dict[Path, str]:
    """Every generated page by its path, with its text."""
    return {
        REFERENCE / "settings.md": settings_page(),
        REFERENCE / "metrics.md": metrics_page(),
        REFERENCE / "model-file.md": model_file_page(),
        REFERENCE / "errors.md": errors_page(),
        REFERENCE / "protos.md": protos_page(),
    }


def main() -> int:
    for path, text in pages().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(DOCS.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
