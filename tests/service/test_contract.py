"""The model-file contract (service/contract.py): the writer and the parser agree, and every
value of the wrong form is refused with the key named."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from foldserve import contract
from foldserve.contract import (
    KEYS,
    BNStats,
    ContractError,
    FoldedLayer,
    FoldReport,
    LeftLayer,
    ModelMetadata,
)

STATS = BNStats(
    layer="3", folded_into="2", direction=contract.BACKWARD, mean=(0.5, -1.0),
    var=(2.0, 0.25), gamma=(1.5, 0.5), beta=(0.0, 0.1), eps=1e-5,
)  # fmt: skip
METADATA = ModelMetadata(
    model_version="v1",
    created="2026-01-01T00:00:00+00:00",
    dataset="digits",
    arch="mlp",
    input_shape=(1, 8, 8),
    class_labels=("a", "b"),
    foldserve_version="0.2.0",
    bn_stats=(STATS,),
    fold_report=FoldReport.of([STATS], [LeftLayer("7", "a reason")]),
    training_metrics={"test_accuracy": 0.5, "split": {"seed": 0}},
)


def test_every_field_has_exactly_one_key() -> None:
    assert set(KEYS) == {f.name for f in dataclasses.fields(ModelMetadata)}
    assert len(set(KEYS.values())) == len(KEYS)
    assert all(key.startswith("foldserve.") for key in KEYS.values())


def test_round_trip() -> None:
    properties = contract.to_properties(METADATA)
    # A file without the optional keys (shift monitor, adaptation): written as before they existed.
    optional = {KEYS["taps"], KEYS["shift_reference"], KEYS["adaptation"]}
    assert set(properties) == set(KEYS.values()) - optional
    assert all(isinstance(value, str) for value in properties.values())
    assert contract.from_properties(properties) == METADATA


def test_documented_json_forms() -> None:
    properties = contract.to_properties(METADATA)
    assert json.loads(properties[KEYS["fold_report"]]) == {
        "folded": [{"layer": "3", "folded_into": "2", "direction": "backward"}],
        "left": [{"layer": "7", "reason": "a reason"}],
    }
    (entry,) = json.loads(properties[KEYS["bn_stats"]])
    assert entry["num_features"] == 2 and entry["reads_model_input"] is False
    assert properties[KEYS["input_shape"]] == "[1, 8, 8]"


def test_reads_the_fold_report_spelling_of_foldserve_0_1() -> None:
    properties = contract.to_properties(METADATA)
    properties[KEYS["fold_report"]] = json.dumps(
        {"folded": [{"bn": "3", "into": "2", "direction": "backward"}], "left": []}
    )
    report = contract.from_properties(properties).fold_report
    assert report.folded == (FoldedLayer("3", "2", "backward"),)


def test_unknown_foldserve_keys_are_ignored() -> None:
    properties = {**contract.to_properties(METADATA), "foldserve.from_the_future": "{}"}
    assert contract.from_properties(properties) == METADATA


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_shape", "[0, 8]", "must be a list of positive integers"),
        ("input_shape", "[1.5]", "must be a list of positive integers"),
        ("class_labels", "[]", "class_labels is empty"),
        ("bn_stats", "{}", "must be a JSON list"),
        ("bn_stats", "[3]", r"bn_stats\[0\]: expected a JSON object"),
        ("fold_report", '{"folded": [{"layer": "x"}]}', r"folded\[0\]: 'folded_into' missing"),
        ("fold_report", '{"left": 3}', r"fold_report\.left: expected a list"),
    ],
)
def test_values_of_the_wrong_form(field: str, value: str, message: str) -> None:
    properties = {**contract.to_properties(METADATA), KEYS[field]: value}
    with pytest.raises(ContractError, match=message):
        contract.from_properties(properties)


def test_no_metadata_at_all() -> None:
    assert not contract.has_metadata({})
    with pytest.raises(ContractError, match="no foldserve metadata"):
        contract.from_properties({"producer": "someone else"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mean": [0.0, float("nan")]}, r"mean\[1\]: nan is not a finite number"),
        ({"eps": -1}, r"eps: expected a finite number >= 0"),
        ({"num_features": 3}, "num_features: 3, but mean has 2 values"),
        ({"reads_model_input": "yes"}, "expected true or false"),
        ({"mean": [True, 0.0]}, r"mean\[0\]: True is not a finite number"),
    ],
)
def test_bn_stats_records_are_checked(change: dict, message: str) -> None:
    entry = {**STATS.to_json(), **change}
    with pytest.raises(ContractError, match=message):
        BNStats.from_json(json.loads(json.dumps(entry)), "stats")


def test_fold_properties_write_only_the_fold_keys_and_read_back() -> None:
    report = FoldReport.of([STATS], [LeftLayer("7", "a reason")])
    properties = contract.fold_properties([STATS], report, "0.2.0")
    assert set(properties) == {KEYS["bn_stats"], KEYS["fold_report"], KEYS["foldserve_version"]}
    assert properties[KEYS["foldserve_version"]] == "0.2.0"
    # The same JSON forms as a full file's, so one reader serves both.
    full = contract.to_properties(METADATA)
    assert properties[KEYS["bn_stats"]] == full[KEYS["bn_stats"]]
    assert properties[KEYS["fold_report"]] == full[KEYS["fold_report"]]
    other = {"producer": "tf2onnx", **properties}
    assert contract.read_fold_properties(other) == ((STATS,), report)
    assert contract.read_fold_properties(full) == ((STATS,), report)


def test_read_fold_properties_without_a_fold() -> None:
    assert contract.read_fold_properties({}) is None
    assert contract.read_fold_properties({KEYS["foldserve_version"]: "0.2.0"}) is None


TAP = contract.Tap("3", contract.tap_name("3"), contract.BN_OUTPUT, spatial=True, moments=1)
GROUP = contract.SummaryGroup(
    name="3", source=contract.SOURCE_TAPS, start=0, width=2, center=(0.5, -1.0), var=(1.0, 2.0),
    summaries=("level", "pc1", "residual"), projections=((0.5, 0.35), (0.7, -0.7)),
    residual=((0.1, 0.2),), knots=((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (0.1, 0.5, 0.9)),
    shrinkage=0.05,
)  # fmt: skip
REFERENCE = contract.ShiftReference(
    arl=1e6, k=0.5, cap=6.0, grid=(-2.0, 2.0, 3), data="digits training split", examples=1000,
    groups=(GROUP,), class_priors=(0.25, 0.75), tolerance=0.2, inflation=1.1,
    class_tolerance=0.2, replay=1000, replay_data="digits validation split", replay_peak=0.5,
)  # fmt: skip
SHIFTED = dataclasses.replace(METADATA, taps=(TAP,), shift_reference=REFERENCE)


def test_taps_and_reference_round_trip_under_their_keys() -> None:
    properties = contract.to_properties(SHIFTED)
    assert set(properties) == set(KEYS.values()) - {KEYS["adaptation"]}
    assert contract.from_properties(properties) == SHIFTED
    assert json.loads(properties[KEYS["taps"]]) == [
        {"layer": "3", "name": "tap.3", "side": "bn_output", "spatial": True, "moments": 1}
    ]
    written = json.loads(properties[KEYS["shift_reference"]])
    assert written["groups"][0]["summaries"] == ["level", "pc1", "residual"]
    text = json.dumps(REFERENCE.to_json())  # the file beside a model holds the same JSON
    assert contract.parse_shift_reference(text, "shift-reference.json") == REFERENCE
    assert contract.read_shift_reference(properties) == REFERENCE


def test_files_of_foldserve_0_1_still_load_without_their_monitor() -> None:
    """Their taps were values and squares; their calibration key is no longer read."""
    properties = contract.to_properties(dataclasses.replace(SHIFTED, shift_reference=None))
    properties[KEYS["taps"]] = json.dumps([{"layer": "3", "name": "tap.3", "side": "bn_output"}])
    properties["foldserve.shift_calibration"] = json.dumps({"half_life": 100})
    metadata = contract.from_properties(properties)
    assert metadata.taps[0].moments == 2 and metadata.shift_reference is None
    assert contract.has_legacy_calibration(properties)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fold_report": None}, "foldserve.fold_report missing"),
        ({"bn_stats": None}, "foldserve.bn_stats missing"),
        ({"bn_stats": "not json"}, "foldserve.bn_stats is not valid JSON"),
        ({"bn_stats": '[{"layer": "x"}]'}, r"bn_stats\[0\]: 'mean' missing"),
        ({"fold_report": "[]"}, "fold_report must be a JSON dict"),
    ],
)
def test_read_fold_properties_refuses_bad_values(change: dict, message: str) -> None:
    properties = contract.fold_properties([STATS], FoldReport.of([STATS]), "0.2.0")
    for field, value in change.items():
        if value is None:
            del properties[KEYS[field]]
        else:
            properties[KEYS[field]] = value
    with pytest.raises(ContractError, match=message):
        contract.read_fold_properties(properties)


def test_read_fold_properties_reads_the_0_1_spelling() -> None:
    properties = contract.fold_properties([STATS], FoldReport.of([STATS]), "0.1.0")
    properties[KEYS["fold_report"]] = json.dumps(
        {"folded": [{"bn": "3", "into": "2", "direction": "backward"}], "left": []}
    )
    _, report = contract.read_fold_properties(properties)
    assert report.folded == (FoldedLayer("3", "2", "backward"),)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arl": 1}, "arl: expected a finite number >= 2.0"),
        ({"k": 0.1, "tolerance": 0.2}, "expected 0 <= tolerance < k < cap"),
        ({"grid": [1, 0, 3]}, "grid: expected [first, last, count >= 2]"),
        ({"class_priors": [0.5, 0.6]}, "class_priors: must sum to 1"),
        ({"class_rarer": 2.0}, "expected class_rarer < 1 < class_more"),
        ({"examples": 1.5}, "examples: expected an integer >= 0"),
        ({"groups": [{**GROUP.to_json(), "source": "elsewhere"}]}, "groups[0].source"),
        ({"groups": [{**GROUP.to_json(), "center": [0.0]}]}, "groups[0].center: 1 values"),
        ({"groups": [{**GROUP.to_json(), "summaries": ["a"]}]}, "1 names for 3 summaries"),
        ({"groups": [{**GROUP.to_json(), "knots": [[0, 1]] * 3}]}, "knots != grid count"),
    ],
)
def test_reference_records_are_checked(change: dict, message: str) -> None:
    properties = contract.to_properties(SHIFTED)
    value = {**json.loads(properties[KEYS["shift_reference"]]), **change}
    properties[KEYS["shift_reference"]] = json.dumps(value)
    with pytest.raises(ContractError, match=f"^foldserve.shift_reference.*{re.escape(message)}"):
        contract.from_properties(properties)


def test_tap_records_are_checked() -> None:
    properties = contract.to_properties(SHIFTED)
    properties[KEYS["taps"]] = json.dumps([{"layer": "3", "name": "tap.3", "side": "inside"}])
    with pytest.raises(ContractError, match=r"foldserve.taps\[0\].side: 'inside' is not one of"):
        contract.from_properties(properties)


ADAPTATION = contract.Adaptation(
    source_sha256="ab" * 32, source_version="v1", examples=500, data="stream.npz",
    created="2026-01-02T00:00:00Z", layers=("3",), agreement=0.97, entropy_source=0.4,
    entropy_adapted=0.1,
)  # fmt: skip


def test_an_adaptation_round_trips_and_marks_the_file() -> None:
    properties = contract.to_properties(METADATA)
    adapted = contract.adapted_properties(properties, [STATS], None, ADAPTATION, "0.3.0", "v2")
    assert contract.read_adaptation(adapted) == ADAPTATION
    read = contract.from_properties(adapted)
    assert read.adaptation == ADAPTATION and read.model_version == "v2"
    assert contract.read_adaptation(properties) is None


def test_adapting_a_file_without_a_fold_is_refused_with_the_keys_named() -> None:
    with pytest.raises(ContractError, match=KEYS["bn_stats"]):
        contract.adapted_properties({}, [STATS], None, ADAPTATION, "0.3.0", "v2")


@pytest.mark.parametrize("examples", [0, -1, 1.5, "500"])
def test_an_adaptation_with_a_bad_example_count_is_refused(examples) -> None:
    value = {**ADAPTATION.to_json(), "examples": examples}
    with pytest.raises(ContractError, match="examples"):
        contract.Adaptation.from_json(value, KEYS["adaptation"])
