"""The model-file page: every metadata key of a model file and every config.json key, from the
contract (`foldserve.contract`), which is the only place that spells them.

The descriptions are the tables in the contract modules' docstrings; the keys are the contract's
own constants, and a key without a row there (or a row without a key) fails the generator. Each
JSON record is shown by what its own `to_json` writes for a small example.
"""

from __future__ import annotations

import inspect
import json
import re

from foldserve import contract
from foldserve.contract import config, metadata, reference, shift

ROW = re.compile(r"^\| `([^`]+)` \| (.+) \|$", re.M)


def _described(module: object, keys: list[str]) -> list[tuple[str, str]]:
    """(key, the rest of its docstring row) for each key, in the order of `keys`."""
    rows = dict(ROW.findall(inspect.getdoc(module) or ""))
    missing, extra = set(keys) - set(rows), set(rows) - set(keys)
    name = module.__name__
    assert not missing and not extra, f"{name}'s docstring table: missing {missing}, extra {extra}"
    return [(key, rows[key]) for key in keys]


def _samples() -> list[tuple[type, object]]:
    """A small instance of each JSON record, as a file carries it."""
    bn = contract.BNStats("0", "1", contract.FORWARD, (3.2,), (2.5,), (1.0,), (0.0,), 1e-5, True)
    left = contract.LeftLayer("5", "backward: its input is a graph input; forward: ...")
    group = reference.SummaryGroup(
        name="input",
        source="input",
        start=0,
        width=2,
        center=(3.2, 0.4),
        var=(2.5, 0.9),
        summaries=("pc1", "residual"),
        projections=((0.6, 0.8),),
        residual=((0.8, -0.6),),
        knots=((-2.1, 0.0, 2.0), (-0.7, 0.5, 1.6)),
        shrinkage=0.05,
    )
    shift_reference = reference.ShiftReference(
        arl=1e6, k=0.5, cap=6.0, grid=(-2.5, 2.5, 3),
        data="digits training and validation splits", examples=1527, groups=(group,),
        class_priors=(0.5, 0.5), tolerance=0.2, inflation=1.1, class_tolerance=0.2,
        replay=100000, replay_data="digits test split, replayed", replay_peak=0.4,
    )  # fmt: skip
    return [
        (contract.BNStats, bn),
        (contract.FoldReport, contract.FoldReport.of((bn,), (left,))),
        (contract.Tap, contract.Tap("2", contract.tap_name("2"), contract.BN_OUTPUT)),
        (reference.SummaryGroup, group),
        (reference.ShiftReference, shift_reference),
    ]


def _record(kind: type, sample: object) -> str:
    doc = inspect.getdoc(kind) or ""
    entries = sample.to_json()  # type: ignore[attr-defined]
    value = ",\n".join(f"  {json.dumps(key)}: {json.dumps(v)}" for key, v in entries.items())
    return (
        f"### {kind.__name__}\n\n{_attributes_as_list(doc)}\n\n"
        f"For example:\n\n```json\n{{\n{value}\n}}\n```\n"
    )


def _attributes_as_list(doc: str) -> str:
    """A Google-style docstring as Markdown: its `Attributes:` section as a list."""
    head, _, attributes = doc.partition("\nAttributes:\n")
    if not attributes:
        return head
    items = re.split(r"\n    (?=\w+: )", "\n" + attributes)
    lines = []
    for item in filter(None, (i.strip() for i in items)):
        name, _, text = item.partition(": ")
        lines.append(f"- `{name}`: " + " ".join(text.split()))
    return head.strip() + "\n\n" + "\n".join(lines)


def model_file_page() -> str:
    """docs/reference/model-file.md."""
    keys = _described(metadata, list(metadata.KEYS.values()))
    key_rows = "\n".join(f"| `{key}` | {rest} |" for key, rest in keys)
    config_rows = "\n".join(
        f"| `{key}` | {rest} |" for key, rest in _described(config, list(config.CONFIG_KEYS))
    )
    records = "\n".join(_record(kind, sample) for kind, sample in _samples())
    return f"""# Model file and config.json

Generated from `foldserve.contract`, the one module that spells these keys
(`python docs/reference_pages.py`). How to make and serve such files:
[Training](../guides/training.md) and [Your own model](../guides/own-model.md).

## Metadata keys

A foldserve `model.onnx` carries, beside its graph, these `metadata_props`; every value is a
string, JSON where the field is not text. Format version: `{metadata.FORMAT_VERSION}`.

| key | field of `ModelMetadata` | value |
| --- | --- | --- |
{key_rows}

A reader ignores `foldserve.*` keys it does not know, so new keys extend format
`{metadata.FORMAT_VERSION}` without breaking it; a file that breaks the table is refused when it
is loaded, naming the key (`foldserve.bn_stats[0].var[1]: -1.0 is not a finite number >= 0.0`).
`foldserve fold` writes only `foldserve.bn_stats`, `foldserve.fold_report` and
`foldserve.version` into someone else's ONNX file, keeping that file's own metadata.

Graph names are part of the contract too: the input `{contract.INPUT_NAME}`, the outputs
`{contract.LOGITS}` and `{contract.PROBABILITIES}` (softmax of the logits), each
`[batch, classes]`, and, with the shift monitor, one output `{contract.TAP_PREFIX}<layer>` per
folded BN and `{contract.TAPS}`, all of them end to end.

## JSON records

{records}
## Taps

{inspect.getdoc(shift)}

## config.json

An optional `{config.CONFIG_FILE}` beside any model file (a model foldserve did not train needs
it most). Every key is optional; an unknown key, a value of the wrong type, or labels that do
not fit the model refuse the file at load, naming the file and the key.

| key | value | what it does |
| --- | --- | --- |
{config_rows}

A single file reads the `config.json` in its directory. In a model's directory of versions,
`<model>/config.json` applies to every version and `<model>/<version>/config.json` wins over it;
there the versions are the directories' names and the name is the directory's, so no
directory-wide config may give `version` and a version's own may not give `name`. For a model
foldserve trained, `name` and `version` apply, and `class_labels` may only repeat the file's
`foldserve.class_labels`.
"""
