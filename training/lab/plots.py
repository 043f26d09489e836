"""The lab's figures, drawn with matplotlib's object-oriented API straight to PNG files.

No pyplot: a bare `Figure` renders through the Agg canvas when saved, so nothing here needs a
display or touches pyplot's global state (the lab may run inside tests or a server's process).
Each `draw_*` takes the run's results and writes one small PNG; `draw_all` writes them all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from foldserve.training.lab.experiments.batchsize import VARIANTS, variant_name
from foldserve.training.lab.experiments.blackcat import MODELS
from foldserve.training.lab.experiments.nets import LABELS

DPI = 80
COLORS = {
    "plain": "tab:red",
    "plain-glorot": "tab:orange",
    "bn": "tab:blue",
    "noisy-bn": "tab:green",
}


def _log_x(ax, ticks) -> None:
    """A log-scaled x axis labelled at `ticks` only (matplotlib's minor labels collide)."""
    ax.set_xscale("log")
    ax.set_xticks(list(ticks), [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _quiet_log_y(ax) -> None:
    ax.yaxis.set_minor_formatter(NullFormatter())


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _runs(results: dict, kind: str, lr: float) -> list[dict]:
    return [r for r in results["speed"]["runs"] if r["kind"] == kind and r["lr"] == lr]


def _mean_band(ax, runs: list[dict], key: str, kind: str, label: str) -> None:
    steps = runs[0]["curve"]["step"]
    values = np.array([r["curve"][key] for r in runs], dtype=float)
    ax.plot(steps, np.nanmean(values, 0), color=COLORS[kind], label=label)
    ax.fill_between(
        steps, np.nanmin(values, 0), np.nanmax(values, 0), color=COLORS[kind], alpha=0.2
    )


def draw_learning_speed(results: dict, path: Path) -> Path:
    """Figure 1(a): validation accuracy against steps, one panel per learning rate."""
    lrs = list(dict.fromkeys(r["lr"] for r in results["speed"]["runs"]))
    fig = Figure(figsize=(3.2 * len(lrs), 3.0), layout="constrained")
    axes = fig.subplots(1, len(lrs), sharey=True, squeeze=False)[0]
    for ax, lr in zip(axes, lrs, strict=True):
        for kind in LABELS:
            if runs := _runs(results, kind, lr):
                _mean_band(ax, runs, "val_accuracy", kind, LABELS[kind])
        ax.axhline(results["speed"]["target"], color="grey", lw=0.8, ls=":")
        ax.set(title=f"SGD rate {lr:g}", xlabel="step", ylim=(0, 1))
    axes[0].set_ylabel("validation accuracy")
    axes[-1].legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def draw_percentiles(results: dict, path: Path) -> Path:
    """Figure 1(b, c): 15th/50th/85th percentiles of one last-layer sigmoid's input (seed 0)."""
    lr = results["meta"]["config"]["reference_lr"]
    kinds = ["plain", "plain-glorot", "bn"]
    fig = Figure(figsize=(9.6, 2.8), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        run = _runs(results, kind, lr)[0]
        values = np.array(run["curve"]["percentiles"], dtype=float)
        for column, style in zip(range(3), (":", "-", ":"), strict=True):
            ax.plot(run["curve"]["step"], values[:, column], color=COLORS[kind], ls=style)
        ax.set(title=f"{LABELS[kind]} (rate {lr:g})", xlabel="step")
    axes[0].set_ylabel("sigmoid input: 15/50/85th pct")
    return _save(fig, path)


def draw_layer_drift(results: dict, path: Path) -> Path:
    """Per-epoch mean shift of each hidden layer's sigmoid inputs (eval mode, mean over seeds)."""
    lr = results["meta"]["config"]["reference_lr"]
    kinds = ["plain", "plain-glorot", "bn"]
    layers = len(_runs(results, "bn", lr)[0]["epoch_drift"]["mean_shift"])
    fig = Figure(figsize=(3.2 * layers, 2.8), layout="constrained")
    axes = fig.subplots(1, layers, sharey=True, squeeze=False)[0]
    for layer, ax in enumerate(axes):
        for kind in kinds:
            shifts = np.array(
                [r["epoch_drift"]["mean_shift"][layer] for r in _runs(results, kind, lr)]
            )
            ax.semilogy(
                np.arange(2, shifts.shape[1] + 2),
                shifts.mean(0),
                color=COLORS[kind],
                label=LABELS[kind],
            )
        ax.set(title=f"hidden layer {layer + 1}", xlabel="epoch")
    axes[0].set_ylabel("|Δ mean| / std per epoch")
    axes[-1].legend(fontsize=7)
    return _save(fig, path)


def draw_noisy_bn(results: dict, path: Path) -> Path:
    """Santurkar's test: accuracy with noise injected after BN, and what the sigmoids saw."""
    lr = results["meta"]["config"]["reference_lr"]
    fig = Figure(figsize=(9.6, 2.8), layout="constrained")
    accuracy, *views = fig.subplots(1, 3)
    for kind in ("plain-glorot", "bn", "noisy-bn"):
        _mean_band(accuracy, _runs(results, kind, lr), "val_accuracy", kind, LABELS[kind])
    accuracy.set(title=f"rate {lr:g}", xlabel="step", ylabel="validation accuracy", ylim=(0, 1))
    accuracy.legend(fontsize=7, loc="lower right")
    for ax, kind in zip(views, ("bn", "noisy-bn"), strict=True):
        run = _runs(results, kind, lr)[0]
        values = np.array(run["train_view"]["percentiles"], dtype=float)
        for column, style in zip(range(3), (":", "-", ":"), strict=True):
            ax.plot(run["curve"]["step"], values[:, column], color=COLORS[kind], ls=style)
        ax.set(title=f"{LABELS[kind]}: seen in training", xlabel="step")
    return _save(fig, path)


def draw_smoothness(results: dict, path: Path) -> Path:
    """Santurkar's Figure 4: loss range, gradient change and β-smoothness along the gradient."""
    lr = results["meta"]["config"]["reference_lr"]
    keys = (
        ("loss_range", "loss range"),
        ("grad_change", "gradient change"),
        ("beta", "β-smoothness"),
    )
    fig = Figure(figsize=(9.6, 2.8), layout="constrained")
    axes = fig.subplots(1, len(keys))
    for ax, (key, title) in zip(axes, keys, strict=True):
        for kind in ("plain", "plain-glorot", "bn"):
            runs = [r for r in _runs(results, kind, lr) if r["probes"]]
            steps = [p["step"] for p in runs[0]["probes"]]
            values = np.array([[p[key] for p in r["probes"]] for r in runs], dtype=float)
            ax.semilogy(steps, np.nanmean(values, 0), color=COLORS[kind], label=LABELS[kind])
        ax.set(title=title, xlabel="step")
        _quiet_log_y(ax)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def draw_batch_noise(results: dict, path: Path) -> Path:
    """Spread of mini-batch means and variances against the batch size, with the sampling law."""
    layers = results["batchsize"]["spread"]["layers"]
    fig = Figure(figsize=(6.4, 2.8), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    for ax, key, name in zip(axes, ("mean", "var"), ("mean", "variance"), strict=True):
        for index, layer in enumerate(layers):
            sizes = [r["batch_size"] for r in layer["rows"]]
            ax.loglog(
                sizes,
                [r[f"{key}_spread"] for r in layer["rows"]],
                "o",
                ms=4,
                label=f"BN {index + 1} measured",
            )
            ax.loglog(
                sizes,
                [r[f"{key}_law"] for r in layer["rows"]],
                "-",
                lw=0.8,
                color=ax.lines[-1].get_color(),
                label=f"BN {index + 1} law",
            )
        ax.set(title=f"spread of batch {name}", xlabel="batch size B")
        _log_x(ax, sizes)
        _quiet_log_y(ax)
    axes[0].set_ylabel("std across batches (in units)")
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def draw_generalization(results: dict, path: Path) -> Path:
    """Validation − training loss, and validation accuracy, against the batch size."""
    rows = results["batchsize"]["summary"]
    fig = Figure(figsize=(6.4, 2.8), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    for ax, key, title in zip(
        axes, ("loss_gap", "val_accuracy"), ("val − train loss", "validation accuracy"), strict=True
    ):
        for variant in VARIANTS:
            name = variant_name(variant["bn"], variant["dropout"])
            group = [r for r in rows if r["variant"] == name]
            ax.errorbar(
                [r["batch_size"] for r in group],
                [r[key]["mean"] for r in group],
                [r[key]["std"] for r in group],
                marker="o",
                ms=3,
                capsize=2,
                label=name,
                ls="--" if variant["dropout"] else "-",
            )
        ax.set(title=title, xlabel="batch size")
        _log_x(ax, sorted({r["batch_size"] for r in rows}))
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def draw_test_time(results: dict, path: Path) -> Path:
    """Test accuracy by normalization statistics, and by running-average momentum."""
    summary = results["testtime"]["summary"]
    labels = [f"own batch of {size}" for size in summary["own_batch"]] + [
        "running",
        "precise",
        "folded",
    ]
    stats = [
        *summary["own_batch"].values(),
        summary["moving_average_running_accuracy"],
        summary["precise_running_accuracy"],
        summary["precise_folded_accuracy"],
    ]
    fig = Figure(figsize=(8.0, 2.8), layout="constrained")
    bars, momentum = fig.subplots(1, 2, width_ratios=(3, 2))
    bars.barh(labels, [s["mean"] for s in stats], xerr=[s["std"] for s in stats], color="tab:blue")
    bars.set(xlabel="test accuracy", xlim=(0, 1))
    bars.invert_yaxis()
    rows = summary["momentum"]
    for key, label in (
        ("moving_average_accuracy", "moving averages"),
        ("precise_accuracy", "precise BN"),
    ):
        momentum.errorbar(
            range(len(rows)),
            [r[key]["mean"] for r in rows],
            [r[key]["std"] for r in rows],
            marker="o",
            ms=3,
            capsize=2,
            label=label,
        )
    # One tick per momentum tried, evenly spaced: on a log axis 0.5 and 0.9 would collide.
    momentum.set_xticks(range(len(rows)), [f"{r['momentum']:g}" for r in rows])
    momentum.set(xlabel="BN momentum", title="short training", ylabel="test accuracy")
    momentum.legend(fontsize=7)
    return _save(fig, path)


def draw_black_cat(results: dict, path: Path) -> Path:
    """Accuracy on each test slice for each model, and the shift monitor's score."""
    summary = results["blackcat"]["summary"]
    names = list(summary)
    fig = Figure(figsize=(9.6, 3.4), layout="constrained")
    bars, scores = fig.subplots(1, 2, width_ratios=(3, 1.4))
    width = 0.8 / len(MODELS)
    for index, model in enumerate(MODELS):
        positions = np.arange(len(names)) + (index - 1) * width
        bars.barh(
            positions,
            [summary[n][model]["mean"] for n in names],
            width,
            xerr=[summary[n][model]["std"] for n in names],
            label=model,
        )
    bars.set(yticks=np.arange(len(names)), yticklabels=names, xlabel="test accuracy", xlim=(0, 1))
    bars.invert_yaxis()
    fig.legend(*bars.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=7)
    scores.barh(names, [summary[n]["shift_score"]["mean"] for n in names], color="tab:purple")
    scores.set(xscale="log", xlabel="input shift score", yticks=[])
    scores.invert_yaxis()
    return _save(fig, path)


FIGURES: dict[str, Callable[[dict, Path], Path]] = {
    "learning_speed.png": draw_learning_speed,
    "sigmoid_percentiles.png": draw_percentiles,
    "layer_drift.png": draw_layer_drift,
    "noisy_bn.png": draw_noisy_bn,
    "smoothness.png": draw_smoothness,
    "batch_noise.png": draw_batch_noise,
    "generalization_gap.png": draw_generalization,
    "test_time.png": draw_test_time,
    "black_cat.png": draw_black_cat,
}


def draw_all(results: dict, out: Path) -> list[Path]:
    """Write every figure into `out`; returns their paths."""
    return [draw(results, out / name) for name, draw in FIGURES.items()]
