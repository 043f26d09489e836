"""The record of an adaptation: a model file whose folded BNs' statistics were re-estimated on a
sample of unlabeled inputs (`foldserve adapt`, or a server's candidate version).

Key `foldserve.adaptation` (`KEYS["adaptation"]`), a JSON `Adaptation`. An adapted file also
carries its new `foldserve.bn_stats` (the statistics the weights were folded with now) and a
`foldserve.shift_reference` fitted on the adaptation sample, so its monitor compares traffic
against what it was adapted to; `adapted_properties` writes all three, on any file (with or
without the rest of foldserve's metadata).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from foldserve.contract.fields import ContractError
from foldserve.contract.metadata import (
    KEYS,
    fold_properties,
    has_metadata,
    read_adaptation,
    read_fold_properties,
    shift_reference_properties,
)
from foldserve.contract.records import Adaptation, BNStats
from foldserve.contract.reference import ShiftReference

__all__ = ["adapted_properties", "read_adaptation"]


def adapted_properties(
    properties: Mapping[str, str],
    bn_stats: Sequence[BNStats],
    reference: ShiftReference | None,
    record: Adaptation,
    foldserve_version: str,
    model_version: str,
) -> dict[str, str]:
    """The `metadata_props` of the adapted file: the source's, with the new BN statistics, the
    new shift reference (None: the source's is dropped: it described the old traffic), the
    adaptation record and, for a file with foldserve metadata, a new model version.

    Raises:
        ContractError: the source records no fold (nothing to adapt), or a broken one.
    """
    fold = read_fold_properties(properties)
    if fold is None:
        raise ContractError(
            f"metadata keys {KEYS['bn_stats']} and {KEYS['fold_report']} missing: "
            "the file records no folded BatchNorm (fold it with `foldserve fold` first)"
        )
    updated = dict(properties)
    updated.update(fold_properties(bn_stats, fold[1], foldserve_version))
    updated.pop(KEYS["shift_reference"], None)
    if reference is not None:
        updated.update(shift_reference_properties(reference))
    updated[KEYS["adaptation"]] = json.dumps(record.to_json())
    if has_metadata(properties):
        updated[KEYS["model_version"]] = model_version
        updated[KEYS["created"]] = record.created
    return updated
