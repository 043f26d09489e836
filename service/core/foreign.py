"""What the server knows of a model file foldserve did not train: its graph, and the config file.

A file without foldserve metadata is read from its graph (`graph_spec`): its inputs and outputs,
one run on zeros, whether `Predict` can serve it. Its class labels come from `config.json`, or
are "0".."C-1"; a fold by `foldserve fold` left its BN statistics and fold report in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from service import contract
from service.contract import BNStats, ContractError, FoldReport, ModelConfig, ShiftCalibration, Tap
from service.core.errors import ModelError
from service.core.foreign_shift import input_shift
from service.core.graph_spec import Classifier, GraphSpec, check_run, classifier_of, read_graph
from service.runtime import ort


@dataclass(frozen=True)
class Foreign:
    """A model file without foldserve metadata, as read at load.

    Attributes:
        graph: its inputs and outputs.
        classifier: how `Predict` runs it; None when it is not classifier-shaped, and `reason`
            says why.
        class_labels: position = class index (empty when not a classifier).
        bn_stats, fold_report: what `foldserve fold` recorded (empty: no fold).
        foldserve_version: the foldserve that folded it ("" when none did).
        ran: whether the load-time run on zeros ran (`graph_spec.check_run`).
        shift: the input BN's tap and null calibration, when the shift monitor can watch the
            input (`foreign_shift`; whether it does is the server's `--shift-monitor`).
    """

    graph: GraphSpec
    classifier: Classifier | None
    reason: str
    class_labels: tuple[str, ...]
    bn_stats: tuple[BNStats, ...]
    fold_report: FoldReport
    foldserve_version: str
    ran: bool
    shift: tuple[Tap, ShiftCalibration] | None = None


def read_foreign(
    session: ort.InferenceSession,
    properties: Mapping[str, str],
    config: ModelConfig,
    where: str,
) -> Foreign:
    """Read and check a file without foldserve metadata.

    Raises:
        ModelError: a type the server does not serve, a failed run, config labels that do not
            fit the graph, or a bad fold record.
    """
    graph = read_graph(session, where)
    ran = check_run(session, graph, where)
    found = classifier_of(graph)
    classifier = found if isinstance(found, Classifier) else None
    reason = found if isinstance(found, str) else ""
    labels: tuple[str, ...] = ()
    if classifier is not None:
        labels = tuple(str(i) for i in range(classifier.classes))
    if config.class_labels is not None:
        if classifier is None:
            raise ModelError(
                f"{where}: config.json class_labels: the model is not classifier-shaped ({reason})"
            )
        if len(config.class_labels) != classifier.classes:
            raise ModelError(
                f"{where}: config.json class_labels: {len(config.class_labels)} labels, but "
                f"output {classifier.logits!r} has {classifier.classes} classes"
            )
        labels = config.class_labels
    try:
        fold = contract.read_fold_properties(properties)
    except ContractError as exc:
        raise ModelError(f"{where}: {exc}") from None
    bn_stats, report = fold if fold is not None else ((), FoldReport())
    version = properties.get(contract.KEYS["foldserve_version"], "") if fold else ""
    shift = input_shift(bn_stats, classifier)
    return Foreign(graph, classifier, reason, labels, bn_stats, report, version, ran, shift)
