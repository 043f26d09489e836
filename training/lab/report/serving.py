"""Report sections 5 and 6: test-time statistics and folding; covariate shift."""

from __future__ import annotations

from foldserve.training.defaults import DROPOUT
from foldserve.training.lab.experiments.blackcat import (
    GREY,
    MODELS,
    MONITOR_EXAMPLES,
    NEAR_CONSTANT_VARIANCE,
)
from foldserve.training.lab.report.markdown import figure, pm, table


def test_time(results: dict) -> str:
    data = results["testtime"]
    summary = data["summary"]
    rows = [[f"its own batch of {size}", pm(stat)] for size, stat in summary["own_batch"].items()]
    rows += [
        ["running statistics (moving averages)", pm(summary["moving_average_running_accuracy"])],
        ["folded, from the moving averages", pm(summary["moving_average_folded_accuracy"])],
        ["precise statistics", pm(summary["precise_running_accuracy"])],
        ["folded, from precise statistics", pm(summary["precise_folded_accuracy"])],
    ]
    momentum_rows = [
        [f"{r['momentum']:g}", pm(r["moving_average_accuracy"]), pm(r["precise_accuracy"]),
         pm(r["max_mean_shift_std"], 2)]
        for r in summary["momentum"]
    ]  # fmt: skip
    short = results["meta"]["config"]["short_epochs"]
    by_statistics = table(["BN normalizes with", "test accuracy"], rows)
    by_momentum = table(
        ["momentum m", "moving averages", "precise statistics", "moving mean off by (stds)"],
        momentum_rows,
    )
    bars = figure(
        "test_time.png",
        "Test accuracy by the statistics BN normalizes with, and by momentum (mean ± std)",
    )
    return f"""## 5. Test time: one example has no mini-batch

The model `foldserve train` makes by default (input BN, Linear→BN→ReLU 512-256, dropout
{DROPOUT:g}), trained as it trains it for {data["epochs"]} epochs on raw pixels, is
evaluated on the test split with each BN normalizing by: the statistics of the batch being
predicted (batches of 1, 2, 8 and 32 test images in a seeded random order); its running averages
(eval mode); precise statistics (`training.precise_bn`: exact moments over the training set); and
the folded network (`training.fold.fold_batchnorm`), whose predictions must equal the running
statistics' ones. Alone, an example's batch variance is 0: BN maps every input to β, and the
network gives one answer whatever it is shown.

{by_statistics}
Same prediction, folded vs unfolded, on every test image of every seed:
**{summary["all_same_predictions"]}**; the largest logit difference is
{summary["max_logit_difference"]:.1e} (float32 rounding).

**Momentum of the running averages.** PyTorch updates running = (1 − m)·running + m·batch.
The weights a run learns do not depend on m at all (training normalizes with batch
statistics), so one short run per seed ({short} epochs) serves every m: a hook sees each
training batch's input to every BN and keeps one average per m (at m = 0.1 its averages match
BatchNorm's own to within {summary["hook_vs_batchnorm"]:.1e}). The precise-statistics column is
therefore the same network for every m, and the moving-average column shows only how good the
estimate was; the last column, how far the moving mean was from the exact one, at worst, in
standard deviations.

{by_momentum}
{bars}"""


def black_cat(results: dict) -> str:
    data = results["blackcat"]
    summary = data["summary"]
    rows = [
        [name, row["examples"], *(pm(row[m]) for m in MODELS), pm(row["shift_score"], 2)]
        for name, row in summary.items()
    ]
    by_slice = table(["test slice", "images", *MODELS, "input shift score"], rows)
    bars = figure(
        "black_cat.png",
        "Accuracy on each test slice, and the input shift score the served model reports",
    )
    return f"""## 6. Covariate shift: the black cats

The lecture's example: a classifier trained only on black cats may fail on coloured ones, though
what makes a cat is unchanged. Ours: each digit's ink is the sum of its pixels; the models train
on the light-ink half of the training split (at or below its class's median ink:
{data["train_examples"]} images, {data["epochs"]} epochs) and are tested on the light and the
heavy half of the test split (a natural shift: other writers, same labels), and on the light
half with its pixels faded (×0.5), emboldened (×1.5) or put on a grey background (+4), clipped
to 0..16. Three models: the project's MLP without BN (pixels / 16), with BN (input BN and hidden
BNs) using its running statistics, which is exactly what the folded, served model computes, and
the same BN model with its statistics re-estimated on the test slice itself (no labels; a
server could do this only after seeing much of the new traffic, and it is not what foldserve
serves). The input shift score is foldserve 0.1's shift statistic on the model input
(`shift_score`: per pixel, standardised mean shift plus half the |log| of the variance ratio,
fed the input BN's statistics from the fold) after {MONITOR_EXAMPLES:,} examples of traffic
drawn from the slice: 0 for traffic like the training data, 1 for every pixel a standard
deviation away. Read each slice against the as-trained row; the server's monitor now tests
such shifts sequentially (docs: "How the shift monitor decides").

{by_slice}
Why the grey background breaks the BN model: in the light-ink training slice
{pm(data["near_constant_pixels"], 1)} of the 64 pixels have a variance below
{NEAR_CONSTANT_VARIANCE:g}, so the input BN, which divides by √(variance + ε), turns a +{GREY:g}
background into up to {pm(data["grey_offset_in_stds"], 0)} standard deviations. The model
without BN sees the same pixels divided by 16.

{bars}"""
