"""What every claim uses: verdict words, number formats and the noise rule."""

from __future__ import annotations

AGREES, DISAGREES, PARTLY, NO_EFFECT = "agrees", "disagrees", "partly", "no measurable effect"


def fmt(stat: dict, digits: int = 3) -> str:
    """`mean ± std` of a `mean_std` record (just the mean for one value)."""
    if stat["n"] == 0:
        return "n/a"
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def beyond_noise(a: dict, b: dict) -> bool:
    """True when the means of `a` and `b` differ by more than the sum of their stds."""
    return abs(a["mean"] - b["mean"]) > a["std"] + b["std"]


def steps_text(row: dict) -> str:
    if not row["reached"]:
        return f"never in {row['steps']}"
    text = fmt(row["steps_to_target"], 0)
    return text if row["reached"] == row["runs"] else f"{text} ({row['reached']}/{row['runs']})"


def claim_record(number: int, claim: str, source: str, measured: str, verdict: str) -> dict:
    return {
        "number": number,
        "claim": claim,
        "source": source,
        "measured": measured,
        "verdict": verdict,
    }
