"""Report: which account our runs side with, what follows for foldserve, and the caveats."""

from __future__ import annotations


def _verdicts(claims: list[dict]) -> dict[int, str]:
    return {c["number"]: c["verdict"] for c in claims}


def _list(claims: list[dict], verdict: str) -> str:
    numbers = [str(c["number"]) for c in claims if c["verdict"] == verdict]
    return ", ".join(numbers) or "none"


def _ics_reduction(results: dict) -> str:
    rows = {r["kind"]: r for r in results["speed"]["smoothness"]}
    bn, plain = rows["bn"]["coupling_relative"], rows["plain-glorot"]["coupling_relative"]
    pairs = zip(bn, plain, strict=True)
    cuts = [100 * (1 - b["mean"] / p["mean"]) for b, p in pairs]
    return f"{min(cuts):.0f}-{max(cuts):.0f}%"


def sides(claims: list[dict], results: dict) -> str:
    """Which of the two accounts of BN the verdicts support, stated from the verdicts alone."""
    v = _verdicts(claims)
    noise, smooth = v[4], v[5]
    if noise == smooth == "agrees":
        lean = "side with"
    elif {noise, smooth} <= {"agrees", "partly"}:
        lean = "lean towards"
    else:
        lean = "do not clearly side with"
    mechanism = (
        f"On *why* BN helps, our runs {lean} **Santurkar et al.**: BN with changing noise "
        f"injected after it (claim 4: {noise}) and the smoothness of the loss along the gradient "
        f"(claim 5: {smooth})."
    )
    explanation = "holds up" if v[3] == "agrees" and noise == "disagrees" else "does not hold up"
    observation = (
        f"Ioffe & Szegedy's observations, that BN speeds learning up (claim 1: {v[1]}) and keeps "
        f"hidden layers' input distributions stable (claim 2: {v[2]}), stand as the verdicts "
        f"say; their explanation, that the stability is *why* it learns faster, {explanation} "
        f"against claims 3 (coupling: {v[3]}) and 4 (noisy BN: {noise})."
    )
    coupling = ""
    if v[3] in ("agrees", "partly"):
        coupling = (
            " One difference from Santurkar et al.: by their own measure of internal covariate "
            "shift (claim 3), BN's layers were *less* coupled than the Glorot network's "
            f"({v[3]}: {_ics_reduction(results)} lower by layer), where they found BN's no "
            "lower, often higher."
        )
    lecture = (
        f"Against the lecture and the papers as a whole: agrees on claims "
        f"{_list(claims, 'agrees')}; partly on {_list(claims, 'partly')}; disagrees on "
        f"{_list(claims, 'disagrees')}; no measurable effect on "
        f"{_list(claims, 'no measurable effect')}. foldserve's own claims hold: "
        f"{_list(claims, 'holds')}."
    )
    return f"## Where our results side\n\n{mechanism} {observation}{coupling}\n\n{lecture}\n"


CAVEATS = """## Caveats

- Small problem: 8×8 digits, about 1,200 training images, networks of 100-512 units, a few
  thousand steps on a CPU. Effects that need depth, width or long training (ImageNet-scale
  regularization, very deep networks) are not tested here.
- Three seeds per configuration (`--quick`: two): the spreads are rough; "beyond noise" compares
  means with the sum of their standard deviations, a simple screen and not a significance test.
- The learning-speed comparison uses SGD with Nesterov momentum and constant rates, as the
  project's `sgd` optimizer does; Ioffe & Szegedy trained MNIST for far longer.
- The noise of the noisy-BN runs (shift ±1, scale ×1/2..2 per unit and step) was fixed before
  the runs; a different level may change claim 4's numbers.
- Dropout is tested at the project's rate, 0.2, the only one foldserve ships; the lecture's
  "dropout regularizes more than BN" may well hold at the 0.5 of the original dropout paper.
- Regularization runs use a fixed number of epochs: a bigger batch also means fewer steps, so
  only the with-and-without-BN comparison at one batch size isolates BN's noise.
- Statistics re-estimated on a test slice (section 6) need a batch of that traffic and are not
  what foldserve serves; they show what the frozen statistics cost, not a feature.
"""
