"""Claims about test time and serving: statistics, folding, momentum, covariate shift."""

from __future__ import annotations

from foldserve.training.lab.claims.common import (
    AGREES,
    DISAGREES,
    NO_EFFECT,
    PARTLY,
    beyond_noise,
    claim_record,
    fmt,
)
from foldserve.training.lab.experiments.blackcat import MODELS


def test_time(results: dict) -> dict:
    """Agrees if one example normalized by its own statistics is at chance (≤ 0.2 on ten
    classes) and every own-batch size tested is below the running statistics."""
    summary = results["testtime"]["summary"]
    own, running = summary["own_batch"], summary["moving_average_running_accuracy"]
    holds = own["1"]["mean"] <= 0.2 and all(s["mean"] < running["mean"] for s in own.values())
    measured = (
        ", ".join(f"own batch of {size}: {fmt(stat)}" for size, stat in own.items())
        + f"; running statistics {fmt(running)}; precise "
        f"{fmt(summary['precise_running_accuracy'])}"
    )
    return claim_record(
        10,
        "At test time a single example has no mini-batch: normalize with running statistics",
        "lecture; Ioffe & Szegedy §3.1",
        measured,
        AGREES if holds else PARTLY,
    )


def folding(results: dict) -> dict:
    """Holds if the folded network predicts exactly what the running statistics do, on every
    test example of every seed, before and after precise BN."""
    summary = results["testtime"]["summary"]
    same = summary["all_same_predictions"]
    measured = (
        f"folded accuracy {fmt(summary['precise_folded_accuracy'])} = running statistics "
        f"{fmt(summary['precise_running_accuracy'])} (moving averages: "
        f"{fmt(summary['moving_average_folded_accuracy'])} = "
        f"{fmt(summary['moving_average_running_accuracy'])}); same prediction on every example: "
        f"{same}; largest logit difference {summary['max_logit_difference']:.1e}"
    )
    return claim_record(
        11,
        "A trained BN network is an affine network: folding BN changes no prediction",
        "foldserve's design",
        measured,
        "holds" if same else "fails",
    )


def precise_bn(results: dict) -> dict:
    """Agrees if precise statistics are nowhere worse than the moving averages beyond noise and
    better beyond noise at some momentum."""
    rows = results["testtime"]["summary"]["momentum"]
    worse = better = False
    for r in rows:
        precise, moving = r["precise_accuracy"], r["moving_average_accuracy"]
        if beyond_noise(precise, moving):
            better |= precise["mean"] > moving["mean"]
            worse |= precise["mean"] < moving["mean"]
    measured = "; ".join(
        f"momentum {r['momentum']:g}: moving averages {fmt(r['moving_average_accuracy'])}, "
        f"precise {fmt(r['precise_accuracy'])} (moving mean off by up to "
        f"{fmt(r['max_mean_shift_std'], 2)} stds)"
        for r in rows
    )
    verdict = DISAGREES if worse else AGREES if better else NO_EFFECT
    return claim_record(
        12,
        "Running averages are only estimates (a slow one lags the weights, a fast one follows "
        "the last few batches); exact statistics recomputed after training fix that",
        "foldserve's precise BN; the lecture: exponentially weighted averages",
        f"short runs ({results['meta']['config']['short_epochs']} epochs) — " + measured,
        verdict,
    )


def covariate_shift(results: dict) -> dict:
    """Agrees if both models lose accuracy beyond noise on the heavy-ink writers' digits."""
    summary = results["blackcat"]["summary"]
    home, natural = list(summary)[:2]
    drops = [
        beyond_noise(summary[home][m], summary[natural][m])
        and summary[natural][m]["mean"] < summary[home][m]["mean"]
        for m in MODELS[:2]
    ]
    measured = "; ".join(
        f"{m}: {fmt(summary[home][m])} → {fmt(summary[natural][m])}" for m in MODELS[:2]
    )
    return claim_record(
        13,
        "A model trained on one input distribution (black cats) does worse on a shifted one, "
        "though the labelling is unchanged",
        "lecture, covariate shift",
        f"{home} → {natural}: " + measured,
        AGREES if all(drops) else PARTLY if any(drops) else NO_EFFECT,
    )


def bn_and_input_shift(results: dict) -> dict:
    """Holds if BN with running statistics (the folded model) is below no BN beyond noise on
    some shifted slice and the shift score of every shifted slice is over twice the training
    slice's; partly if only one of the two."""
    summary = results["blackcat"]["summary"]
    names = list(summary)
    shifted = names[1:]
    worse = [n for n in shifted if summary[n][MODELS[1]]["mean"] < summary[n][MODELS[0]]["mean"]]
    clearly = [n for n in worse if beyond_noise(summary[n][MODELS[1]], summary[n][MODELS[0]])]
    adapted = [n for n in shifted if summary[n][MODELS[2]]["mean"] >= summary[n][MODELS[1]]["mean"]]
    home_score = summary[names[0]]["shift_score"]["mean"]
    scores = ", ".join(f"{n} {summary[n]['shift_score']['mean']:.2f}" for n in shifted)
    worst = min(shifted, key=lambda n: summary[n][MODELS[1]]["mean"])
    measured = (
        f"BN with running statistics below no BN on {len(worse)}/{len(shifted)} shifted slices, "
        f"beyond noise on {len(clearly)} ({', '.join(clearly) or 'none'}); worst, {worst}: "
        f"{fmt(summary[worst][MODELS[1]])} vs {fmt(summary[worst][MODELS[0]])} without BN; "
        f"statistics re-estimated on the slice at least as good as running ones on "
        f"{len(adapted)}/{len(shifted)}; shift score {home_score:.2f} as trained, {scores}"
    )
    detected = all(summary[n]["shift_score"]["mean"] > 2 * home_score for n in shifted)
    return claim_record(
        14,
        "BN does not make a served model robust to input shift (its statistics are frozen "
        "constants); the input BN's statistics do let the server detect the shift",
        "this lab; the lecture's BN argument is about shifts inside the network",
        measured,
        "holds" if clearly and detected else PARTLY if clearly or detected else "does not hold",
    )
