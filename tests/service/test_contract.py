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
    # A file without the shift monitor's optional keys: written as before it existed.
    assert set(properties) == set(KEYS.values()) - {KEYS["taps"], KEYS["shift_calibration"]}
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


TAP = contract.Tap("3", contract.tap_name("3"), contract.BN_OUTPUT, spatial=True)
CALIBRATION = contract.ShiftCalibration(
    half_life=100.0, margin=1.5, prior_margin=2.0, replay=20000, data="digits validation split",
    min_var_fraction=0.01, var_floor=0.01,
    layers=(contract.LayerCalibration("3", 0.2, 0.3, excluded=(1,), sentinel_clean_max=1e-4,
                                      sentinel_threshold=0.0104),),
    class_priors=(0.25, 0.75), prior_clean_max=0.01, prior_threshold=0.02,
)  # fmt: skip
SHIFTED = dataclasses.replace(METADATA, taps=(TAP,), shift_calibration=CALIBRATION)


def test_taps_and_calibration_round_trip_under_their_keys() -> None:
    properties = contract.to_properties(SHIFTED)
    assert set(properties) == set(KEYS.values())
    assert contract.from_properties(properties) == SHIFTED
    assert json.loads(properties[KEYS["taps"]]) == [
        {"layer": "3", "name": "tap.3", "side": "bn_output", "spatial": True}
    ]
    written = json.loads(properties[KEYS["shift_calibration"]])
    assert written["layers"][0]["excluded"] == [1] and written["clip"] is None  # none: infinite
    clipped = dataclasses.replace(
        SHIFTED, shift_calibration=dataclasses.replace(CALIBRATION, clip=5.0)
    )
    assert contract.from_properties(contract.to_properties(clipped)) == clipped


def test_margins_recompute_thresholds_and_sentinels_keep_a_floor() -> None:
    wider = CALIBRATION.with_margins(3.0, 5.0)
    assert wider.layers[0].threshold == pytest.approx(0.6)
    assert wider.prior_threshold == pytest.approx(0.05)
    # The sentinel's clean maximum (1e-4) is below four examples' worth, one scale away each.
    floor = 4 * (1 - 0.5 ** (1 / 100))
    assert wider.layers[0].sentinel_threshold == pytest.approx(3.0 * floor)
    clipped = dataclasses.replace(CALIBRATION, clip=5.0).with_margins(None, None)
    assert clipped.layers[0].sentinel_threshold == pytest.approx(1.5 * 5.0 * floor)
    same = CALIBRATION.with_margins(None, None)
    assert same.margin == 1.5 and same.layers[0].threshold == pytest.approx(0.3)
    assert same.layers[0].sentinel_threshold == pytest.approx(1.5 * floor)


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
        ({"half_life": 0}, "half_life must be > 0"),
        ({"replay": 1.5}, "replay: expected a positive integer"),
        ({"clip": 0}, "clip: expected a positive number or null"),
        ({"resample_every": -1}, "resample_every: expected a positive integer"),
        ({"class_priors": [0.5, 0.6]}, "class_priors: must sum to 1"),
        ({"layers": [{"layer": "3", "clean_max": -1, "threshold": 0}]}, "layers[0].clean_max"),
        (
            {"layers": [{"layer": "3", "clean_max": 1, "threshold": 1, "excluded": [-1]}]},
            "excluded",
        ),
    ],
)
def test_calibration_records_are_checked(change: dict, message: str) -> None:
    properties = contract.to_properties(SHIFTED)
    value = {**json.loads(properties[KEYS["shift_calibration"]]), **change}
    properties[KEYS["shift_calibration"]] = json.dumps(value)
    with pytest.raises(ContractError, match=f"^foldserve.shift_calibration.*{re.escape(message)}"):
        contract.from_properties(properties)


def test_tap_records_are_checked() -> None:
    properties = contract.to_properties(SHIFTED)
    properties[KEYS["taps"]] = json.dumps([{"layer": "3", "name": "tap.3", "side": "inside"}])
    with pytest.raises(ContractError, match=r"foldserve.taps\[0\].side: 'inside' is not one of"):
        contract.from_properties(properties)
