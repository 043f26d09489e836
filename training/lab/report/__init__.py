"""The lab's Markdown report: run facts, the claim-by-claim verdicts, then one section per
experiment with its tables and figures. Every number comes from the results passed in."""

from __future__ import annotations

import inspect

from foldserve.training.lab.claims import CLAIMS, all_claims
from foldserve.training.lab.report import conclusions, optimization, serving, stochastic
from foldserve.training.lab.report.markdown import table


def render(results: dict) -> str:
    """The whole report for one run's results (as `foldserve.training.lab.run` collects them)."""
    claims = all_claims(results)
    parts = [
        _header(results),
        _claims_table(claims),
        conclusions.sides(claims, results),
        optimization.learning_speed(results),
        optimization.stability(results),
        optimization.noisy_bn(results),
        optimization.smoothness(results),
        stochastic.batch_noise(results),
        stochastic.regularization(results),
        serving.test_time(results),
        serving.black_cat(results),
        conclusions.CAVEATS,
        _rules(),
    ]
    return "\n".join(parts)


def _header(results: dict) -> str:
    meta = results["meta"]
    cfg = meta["config"]
    seconds = ", ".join(f"{name} {value:.0f} s" for name, value in meta["seconds"].items())
    return f"""# BatchNorm lab: why BatchNorm works, measured on foldserve's own code

What BatchNorm (BN) buys the networks foldserve trains, folds and serves, and where the folklore
about it holds. The claims come from the lecture foldserve grew from ("Why does batch norm work",
shared/seed-why-batch-norm-works.txt), from Ioffe & Szegedy (2015, *Batch Normalization:
Accelerating Deep Network Training by Reducing Internal Covariate Shift*) and from Santurkar,
Tsipras, Ilyas & Mądry (2018, *How Does Batch Normalization Help Optimization?*). Every number
below was computed by the run that wrote this file; nothing is copied from the papers.

The run: `foldserve lab` ({cfg["name"]} size), seeds {", ".join(map(str, cfg["seeds"]))}, on
the digits data set shipped with scikit-learn (8×8 images, 1,797 of them) in the project's
standard split ({_split_sizes()}); torch {meta["torch"]}, Python {meta["python"]}, {meta["threads"]}
torch thread(s) on {meta["cpus"]} CPU cores. Wall time {meta["total_seconds"]:.0f} s ({seconds});
load average {meta["load_average_before"][0]:.2f} before, {meta["load_average_after"][0]:.2f}
after (the machine is shared; the times are wall-clock). Rerun it with `foldserve lab --out
DIR`; `--quick` runs every experiment at a small size, for smoke tests. On the CPU a run is
deterministic for its seeds: only the times change from one run to the next.
"""


def _split_sizes() -> str:
    from foldserve.training.lab.experiments.common import digits_split

    split = digits_split()
    return f"{len(split.train)} training, {len(split.val)} validation, {len(split.test)} test"


def _claims_table(claims: list[dict]) -> str:
    rows = [
        [c["number"], f"{c['claim']} *({c['source']})*", c["measured"], f"**{c['verdict']}**"]
        for c in claims
    ]
    return (
        "## Claim by claim\n\n"
        "Each verdict follows a stated rule (listed at the end) applied to the numbers beside "
        'it; "± x" is the standard deviation over seeds, and "beyond noise" means two means '
        "differ by more than the sum of their standard deviations.\n\n"
        + table(["#", "claim (source)", "our measurement", "verdict"], rows, "rllr")
    )


def _rules() -> str:
    lines = [f"{n}. **{claim.__name__}**: {inspect.getdoc(claim)}" for n, claim in
             enumerate(CLAIMS, start=1)]  # fmt: skip
    return "## Verdict rules\n\n" + "\n".join(line.replace("\n", " ") for line in lines) + "\n"
