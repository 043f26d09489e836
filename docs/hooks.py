"""MkDocs hook: the figures and the BatchNorm lab's report live beside the code that makes them
(`foldserve lab` writes training/lab/results/, `foldserve bench` bench/figures/); the site takes
them from there, so a rerun updates the docs without a copy to keep in step."""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
# site folder -> (repository folder, file patterns)
BORROWED = {
    "explanation/lab": ("training/lab/results", ("*.png", "report.md")),
    "benchmarks/figures": ("bench/figures", ("*.png",)),
}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for site_dir, (source_dir, patterns) in BORROWED.items():
        for pattern in patterns:
            for path in sorted((REPO / source_dir).glob(pattern)):
                uri = f"{site_dir}/{path.name}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
