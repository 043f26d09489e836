"""One training run: data → fit → precise BN → checkpoint → fold, export and verify."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from foldserve.contract.data import DIGITS, LABEL_COLUMN, SPLIT_SEED, TEST_FRACTION, VAL_FRACTION
from foldserve.contract.layout import MODEL_DIR
from foldserve.core.shift.calibrate import ReferenceData, ShiftConfig, class_priors
from foldserve.training import distributed
from foldserve.training.data import Dataset, load_dataset, make_loader, split_dataset
from foldserve.training.defaults import (
    ARCH,
    BATCH_SIZE,
    CHECKPOINT_FILE,
    DEVICE,
    EVAL_BATCH_SIZE,
    HISTORY_FILE,
)
from foldserve.training.distributed import Workers
from foldserve.training.export import ExportResult, ModelInfo, export_model
from foldserve.training.models import ModelSpec, build_model
from foldserve.training.precise_bn import recompute_bn_statistics
from foldserve.training.train import FitSettings, evaluate, fit, resolve_device, seed_everything

# Examples kept in the checkpoint so that `foldserve export` can verify without the data set.
CHECK_EXAMPLES = 256


@dataclass(frozen=True)
class TrainConfig:
    data: str = DIGITS
    label_column: str = LABEL_COLUMN
    arch: str = ARCH
    out: Path = Path(MODEL_DIR)
    batch_size: int = BATCH_SIZE
    seed: int = SPLIT_SEED
    device: str = DEVICE
    val_fraction: float = VAL_FRACTION
    test_fraction: float = TEST_FRACTION
    precise_bn: bool = True
    model_version: str | None = None
    spec_overrides: dict = field(default_factory=dict)
    fit: FitSettings = field(default_factory=FitSettings)
    shift: ShiftConfig = field(default_factory=ShiftConfig)


@dataclass(frozen=True)
class TrainResult:
    metrics: dict
    export: ExportResult
    checkpoint: Path


def input_shape_for(arch: str, dataset: Dataset) -> tuple[int, ...]:
    """The MLP takes flat feature vectors; the CNN takes the data set's image shape."""
    if arch == "cnn":
        if dataset.image_shape is None or len(dataset.image_shape) != 3:
            raise ValueError(
                f"--arch cnn needs image-shaped data (an .npz whose X is N×C×H×W, or digits); "
                f"{dataset.name} has flat rows of {dataset.num_features} features"
            )
        return tuple(dataset.image_shape)
    return (dataset.num_features,)


def run_training(config: TrainConfig) -> TrainResult | None:
    """Train, recompute BN statistics, save checkpoint and history, then export and verify.

    Under `torchrun` (several workers: RANK, WORLD_SIZE and LOCAL_RANK set) every worker trains
    its share of each global batch with DistributedDataParallel and the precise BN statistics are
    summed over all workers; only rank 0 writes files and returns a result, the others None.
    """
    workers = distributed.from_environment()
    device = distributed.device_for(workers, resolve_device(config.device))
    if workers.distributed and not config.precise_bn and device.type != "cuda":
        raise ValueError(
            "--moving-average-bn with several CPU workers: each worker's moving averages come from "
            "its own share of the batches; drop it (precise BN statistics are global)"
        )
    distributed.start(workers, device)
    try:
        return _train(config, workers, device)
    finally:
        distributed.stop(workers)


def _train(config: TrainConfig, workers: Workers, device: torch.device) -> TrainResult | None:
    seed_everything(config.seed)
    dataset = load_dataset(config.data, config.label_column)
    split = split_dataset(dataset, config.seed, config.val_fraction, config.test_fraction)
    shape = input_shape_for(config.arch, dataset)
    spec = ModelSpec(config.arch, shape, len(dataset.class_labels), **config.spec_overrides)
    model = build_model(spec)
    if workers.distributed:  # same initial weights (DDP also sends rank 0's), own dropout masks
        torch.manual_seed(config.seed + workers.rank)

    batch, world = config.batch_size, workers.world_size
    train_loader = make_loader(split.train, shape, batch, True, config.seed, world)
    val_loader = make_loader(split.val, shape, EVAL_BATCH_SIZE, False)
    test_loader = make_loader(split.test, shape, EVAL_BATCH_SIZE, False)
    started = time.perf_counter()
    history = fit(model, train_loader, val_loader, config.fit, device, workers)
    metrics: dict = {
        "epochs": config.fit.epochs,
        "train_seconds": round(time.perf_counter() - started, 2),
        "workers": world,
        "split": {
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "test_fraction": config.test_fraction,
            "train": len(split.train),
            "val": len(split.val),
            "test": len(split.test),
        },
        "moving_average_bn": _accuracies(model, val_loader, test_loader, device),
        "precise_bn": config.precise_bn,
    }
    ordered_train_loader = make_loader(split.train, shape, EVAL_BATCH_SIZE, False)
    final = metrics["moving_average_bn"]
    if config.precise_bn:
        own_part = make_loader(
            split.train,
            shape,
            EVAL_BATCH_SIZE,
            False,
            part=workers.share(len(split.train)),
        )
        changes = recompute_bn_statistics(model, own_part, device, workers.all_reduce_sum)
        metrics["bn_changes"] = [change.as_dict() for change in changes]
        final = _accuracies(model, val_loader, test_loader, device)
    _, metrics["train_accuracy"] = evaluate(model, ordered_train_loader, device)
    metrics.update(final)
    if not workers.writes_files:
        return None
    return _write(config, model, spec, split, shape, dataset, metrics, history)


def _write(config, model, spec, split, shape, dataset, metrics, history) -> TrainResult:
    """Rank 0 only: history, checkpoint, then the folded, verified model.onnx and its card."""
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / HISTORY_FILE).write_text(json.dumps(history.epochs, indent=2) + "\n")
    model = model.cpu()
    check_inputs = np.ascontiguousarray(split.train.features[:CHECK_EXAMPLES].reshape((-1, *shape)))
    info = ModelInfo(
        config.arch, dataset.name, shape, dataset.class_labels, metrics, config.model_version
    )
    reference = _reference_data(split, shape)
    checkpoint = config.out / CHECKPOINT_FILE
    save_checkpoint(checkpoint, model, spec, info, check_inputs, reference)
    export = export_model(model, config.out, info, check_inputs, reference, config.shift)
    return TrainResult(metrics, export, checkpoint)


def _reference_data(split, shape: tuple[int, ...]) -> ReferenceData:
    """The shift monitor's reference is fitted on the training and validation splits (the test
    split stays out: `foldserve shift-eval` replays it as clean traffic); the validation split,
    which the network was not fitted on, is replayed to check the stated ARL."""
    train, val = split.train, split.val
    inputs = np.concatenate([train.features, val.features]).reshape((-1, *shape))
    return ReferenceData(
        np.ascontiguousarray(inputs, dtype=np.float32),
        class_priors(train.labels, len(train.class_labels)),
        f"{train.name} training and validation splits, {len(inputs)} examples",
        np.ascontiguousarray(val.features.reshape((-1, *shape)), dtype=np.float32),
        f"{val.name} validation split, {len(val)} examples",
    )


def _accuracies(model, val_loader, test_loader, device) -> dict:
    return {
        "val_accuracy": evaluate(model, val_loader, device)[1],
        "test_accuracy": evaluate(model, test_loader, device)[1],
    }


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    spec: ModelSpec,
    info: ModelInfo,
    check_inputs: np.ndarray,
    reference: ReferenceData | None = None,
) -> None:
    """Weights, the spec to rebuild the network, its metadata, a few examples to verify on and
    the examples the shift monitor's reference is fitted on and checked with."""
    saved = {
        "state_dict": model.state_dict(),
        "spec": spec.as_dict(),
        "info": asdict(info),
        "check_inputs": torch.from_numpy(check_inputs),
    }
    if reference is not None:
        saved["shift_reference"] = {
            "inputs": torch.from_numpy(reference.inputs),
            "class_priors": list(reference.class_priors),
            "description": reference.description,
            "held_out": torch.from_numpy(reference.held_out),
            "held_out_description": reference.held_out_description,
        }
    torch.save(saved, path)


def export_checkpoint(
    checkpoint: Path,
    out_dir: Path,
    model_version: str | None = None,
    shift: ShiftConfig | None = None,
) -> ExportResult:
    """Rebuild a trained network from its checkpoint and export it (fold, verify, metadata)."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model = build_model(ModelSpec.from_dict(saved["spec"]))
    model.load_state_dict(saved["state_dict"])
    info_values = dict(saved["info"])
    info_values["input_shape"] = tuple(info_values["input_shape"])
    if model_version is not None:
        info_values["model_version"] = model_version
    check_inputs = saved["check_inputs"].numpy()
    info = ModelInfo(**info_values)
    reference = _saved_reference(saved)
    return export_model(model, out_dir, info, check_inputs, reference, shift)


def _saved_reference(saved: dict) -> ReferenceData | None:
    """The checkpoint's reference sample; a checkpoint of foldserve 0.1 kept only the validation
    split (`held_out`), which then serves as both; one older still, none."""
    if "shift_reference" in saved:
        entry = saved["shift_reference"]
        return ReferenceData(
            entry["inputs"].numpy(),
            tuple(float(p) for p in entry["class_priors"]),
            str(entry["description"]),
            entry["held_out"].numpy(),
            str(entry["held_out_description"]),
        )
    held = saved.get("held_out")
    if held is None:
        return None
    priors = tuple(float(p) for p in held["class_priors"])
    return ReferenceData(held["inputs"].numpy(), priors, str(held["description"]))
