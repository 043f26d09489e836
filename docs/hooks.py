"""MkDocs hooks.

- The figures and the BatchNorm lab's report live beside the code that makes them (`foldserve
  lab` writes training/lab/results/, `foldserve bench` bench/figures/); the site takes them from
  there, so a rerun updates the docs without a copy to keep in step.
- A page added to a section's folder (docs/guides/, docs/benchmarks/, ...) joins the nav by
  itself, at the end of its section, titled by its first heading, when mkdocs.yml does not list
  it yet: a new guide is never left out of the site, and listing it in mkdocs.yml only places it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
# site folder -> (repository folder, file patterns)
BORROWED = {
    "explanation/lab": ("training/lab/results", ("*.png", "report.md")),
    "benchmarks/figures": ("bench/figures", ("*.png",)),
}
# docs folder -> the nav section its pages belong to
SECTIONS = {
    "guides": "Guides",
    "reference": "Reference",
    "explanation": "Explanation",
    "benchmarks": "Benchmarks",
}
log = logging.getLogger("mkdocs.hooks")


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    listed = set(_listed(config.nav))
    docs = Path(config.docs_dir)
    for folder, title in SECTIONS.items():
        section = next(entry[title] for entry in config.nav if title in entry)
        for path in sorted((docs / folder).glob("*.md")):
            uri = f"{folder}/{path.name}"
            if uri not in listed:
                section.append({_title(path): uri})
                log.info("nav: %s joins %s (list it in mkdocs.yml to place it)", uri, title)
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for site_dir, (source_dir, patterns) in BORROWED.items():
        for pattern in patterns:
            for path in sorted((REPO / source_dir).glob(pattern)):
                uri = f"{site_dir}/{path.name}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def _listed(nav: object) -> list[str]:
    """Every page a nav (lists of {title: page or section}) names."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _listed(value)]
    if isinstance(nav, list):
        return [page for item in nav for page in _listed(item)]
    return []


def _title(path: Path) -> str:
    heading = next((line for line in path.read_text().splitlines() if line.startswith("# ")), "")
    return heading.removeprefix("# ").strip() or path.stem
