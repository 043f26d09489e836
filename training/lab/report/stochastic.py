"""Report section 4: mini-batch noise, and regularization against batch size."""

from __future__ import annotations

from foldserve.training.defaults import DROPOUT, LEARNING_RATE, WEIGHT_DECAY
from foldserve.training.lab.report.markdown import figure, pm, table


def _spread_table(layer: dict) -> str:
    rows = [
        [r["batch_size"], f"{r['mean_spread']:.4f}", f"{r['mean_law']:.4f}",
         f"{r['mean_spread'] / r['mean_law']:.3f}", f"{r['var_spread']:.4f}",
         f"{r['var_law']:.4f}"]
        for r in layer["rows"]
    ]  # fmt: skip
    headers = ["B", "spread of means", "law √((N−B)/(B(N−1)))", "ratio", "spread of variances",
               "law √((κ−1)/B)·fpc"]  # fmt: skip
    return table(headers, rows)


def _fit_line(index: int, layer: dict) -> str:
    raw, corrected, var = layer["mean_fit"], layer["mean_fit_corrected"], layer["var_fit"]
    return (
        f"- BN {index + 1} ({layer['num_features']} units): spread of means ∝ "
        f"B^{raw['exponent']:.3f} (prefactor {raw['prefactor']:.3f}); divided by the "
        f"finite-population factor, {corrected['prefactor']:.3f}·B^{corrected['exponent']:.3f} "
        f"(the law: 1·B^-0.5); spread of variances ∝ B^{var['exponent']:.3f} (mean kurtosis "
        f"κ = {layer['mean_kurtosis']:.2f})"
    )


def batch_noise(results: dict) -> str:
    spread = results["batchsize"]["spread"]
    layers = spread["layers"]
    sizes = results["meta"]["config"]["batch_sizes"]
    fits = "\n".join(_fit_line(i, layer) for i, layer in enumerate(layers))
    dots = figure(
        "batch_noise.png",
        "Spread of mini-batch means and variances against the batch size: measured (dots), "
        "sampling law (lines)",
    )
    return f"""## 4. Regularization and mini-batch size

**How noisy are batch statistics?** The lecture: each mini-batch normalizes with its own mean and
variance, estimates from B examples, so they are noisy, and less so for bigger batches. We take
the BN network (no dropout) of the next table trained at B = {sizes[len(sizes) // 2]}, seed 0,
compute every BN's inputs over the {layers[0]["train_examples"]} training images, draw
{spread["samples"]} mini-batches of each size B without replacement (as a shuffled loader does),
and measure the spread (standard deviation across batches) of each unit's batch mean, in units
of its standard deviation, and of its batch variance, in units of its variance, averaged over
units. Sampling theory: the standard error of a mean is 1/√B, times √((N−B)/(N−1)) for drawing
without replacement from N (the finite-population correction, fpc); that of a variance is about
√((κ−1)/B), κ the kurtosis.

{fits}

{dots}
BN 1's inputs, in full:

{_spread_table(layers[0])}"""


def regularization(results: dict) -> str:
    rows = [
        [r["variant"], r["batch_size"], pm(r["loss_gap"]), pm(r["accuracy_gap"]),
         pm(r["val_accuracy"]), pm(r["test_accuracy"])]
        for r in results["batchsize"]["summary"]
    ]  # fmt: skip
    headers = ["network", "batch", "val − train loss", "train − val accuracy", "val. accuracy",
               "test accuracy"]  # fmt: skip
    gaps = figure(
        "generalization_gap.png",
        "Validation − training loss and validation accuracy against the batch size (mean ± std)",
    )
    return f"""**Does BN's noise regularize?** The project's digits MLP (ReLU, 512-256 hidden),
pixels divided by 16, in three variants: without BN, with its hidden BNs, and without BN but
with dropout {DROPOUT:g} after each hidden block (the project's default rate), each
trained as `foldserve train` trains (AdamW, one-cycle, rate {LEARNING_RATE:g}, weight
decay {WEIGHT_DECAY:g}) for {results["meta"]["config"]["gap_epochs"]} epochs at each
batch size. The generalization gap: validation loss − training loss and training accuracy −
validation accuracy, both measured in eval mode after training (mean ± std over seeds). Caveat:
at a fixed number of epochs a bigger batch also takes fewer, larger steps, so the batch size
changes more than BN's noise; the comparison that isolates BN is with and without it at the
same batch size.

{gaps}
{table(headers, rows, "lrrrrr")}"""
