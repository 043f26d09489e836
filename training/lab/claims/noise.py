"""Claims about mini-batch noise: its 1/√B law, and regularization against batch size."""

from __future__ import annotations

from foldserve.training.defaults import DROPOUT
from foldserve.training.lab.claims.common import (
    AGREES,
    DISAGREES,
    NO_EFFECT,
    PARTLY,
    beyond_noise,
    claim_record,
    fmt,
)


def batch_noise(results: dict) -> dict:
    """Agrees if, for every BN layer, the spread of batch means (corrected for sampling without
    replacement) fits B^b with b within 0.05 of −1/2 and a prefactor within 10% of 1."""
    layers = results["batchsize"]["spread"]["layers"]
    ok = all(
        abs(layer["mean_fit_corrected"]["exponent"] + 0.5) < 0.05
        and abs(layer["mean_fit_corrected"]["prefactor"] - 1) < 0.1
        for layer in layers
    )
    measured = "; ".join(
        f"BN {i + 1}: mean spread ∝ B^{layer['mean_fit']['exponent']:.3f} "
        f"(corrected: {layer['mean_fit_corrected']['prefactor']:.3f}·B^"
        f"{layer['mean_fit_corrected']['exponent']:.3f}), variance spread ∝ "
        f"B^{layer['var_fit']['exponent']:.3f}"
        for i, layer in enumerate(layers)
    )
    return claim_record(
        6,
        "Mini-batch mean and variance are noisy estimates; a bigger batch makes them less noisy "
        "(standard error 1/√B)",
        "lecture",
        measured,
        AGREES if ok else PARTLY,
    )


def _gap(results: dict, bn: bool, dropout: float, batch_size: int, key: str = "loss_gap") -> dict:
    rows = results["batchsize"]["summary"]
    return next(
        r[key]
        for r in rows
        if r["bn"] == bn and r["dropout"] == dropout and r["batch_size"] == batch_size
    )


def _sizes(results: dict) -> list[int]:
    return results["meta"]["config"]["batch_sizes"]


def bn_regularizes(results: dict) -> dict:
    """Agrees if BN (no dropout) has a smaller val − train loss gap than no BN at every batch
    size beyond noise; disagrees if larger at every size beyond noise; otherwise no measurable
    effect or partly."""
    smaller, larger, parts = [], [], []
    for size in _sizes(results):
        plain, bn = _gap(results, False, 0.0, size), _gap(results, True, 0.0, size)
        smaller.append(bn["mean"] < plain["mean"] and beyond_noise(bn, plain))
        larger.append(bn["mean"] > plain["mean"] and beyond_noise(bn, plain))
        accuracy = [_gap(results, b, 0.0, size, "val_accuracy") for b in (False, True)]
        parts.append(
            f"B={size}: gap no BN {fmt(plain)}, BN {fmt(bn)} (val. accuracy "
            f"{fmt(accuracy[0])} → {fmt(accuracy[1])})"
        )
    verdict = (
        AGREES
        if all(smaller)
        else DISAGREES
        if all(larger)
        else PARTLY
        if any(smaller)
        else NO_EFFECT
    )
    return claim_record(
        7,
        "BN has a slight regularizing effect (its batch noise acts like weak dropout)",
        "lecture",
        "; ".join(parts),
        verdict,
    )


def dropout_stronger(results: dict) -> dict:
    """Agrees if, at every batch size, adding dropout to the plain network shrinks its gap more
    than adding BN does."""
    parts, holds = [], True
    for size in _sizes(results):
        plain = _gap(results, False, 0.0, size)["mean"]
        by_dropout = plain - _gap(results, False, DROPOUT, size)["mean"]
        by_bn = plain - _gap(results, True, 0.0, size)["mean"]
        holds &= by_dropout > by_bn
        parts.append(f"B={size}: gap shrinks {by_dropout:+.3f} by dropout, {by_bn:+.3f} by BN")
    return claim_record(
        8,
        "Dropout regularizes more strongly than BN",
        "lecture",
        "; ".join(parts),
        AGREES if holds else DISAGREES,
    )


def bigger_batch_weakens(results: dict) -> dict:
    """Agrees if BN's gap reduction (no-BN gap − BN gap) at the largest batch is below that at
    the smallest by more than the stds of the four gaps involved."""
    sizes = _sizes(results)
    benefit, noise = {}, {}
    for size in (sizes[0], sizes[-1]):
        plain, bn = _gap(results, False, 0.0, size), _gap(results, True, 0.0, size)
        benefit[size] = plain["mean"] - bn["mean"]
        noise[size] = plain["std"] + bn["std"]
    spread = noise[sizes[0]] + noise[sizes[-1]]
    measured = (
        f"BN's gap reduction: {benefit[sizes[0]]:+.3f} at B={sizes[0]}, "
        f"{benefit[sizes[-1]]:+.3f} at B={sizes[-1]} (noise ±{spread:.3f})"
    )
    change = benefit[sizes[-1]] - benefit[sizes[0]]
    verdict = AGREES if change < -spread else DISAGREES if change > spread else NO_EFFECT
    return claim_record(
        9,
        "A bigger mini-batch weakens BN's regularization",
        "lecture",
        measured,
        verdict,
    )
