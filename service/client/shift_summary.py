"""The shift monitor's scores as `foldserve predict --summary` prints them (from DescribeModel)."""

from __future__ import annotations

from typing import Any

from foldserve._proto.foldserve.v1 import predictor_pb2 as pb


def shift_summary(shift: pb.ShiftMonitor) -> dict[str, Any]:
    """The scores the server reports, as a JSON-ready dict."""
    if not shift.enabled:
        return {"enabled": False, "reason": shift.reason}
    return {
        "enabled": True,
        "examples": shift.examples,
        "alarm": shift.alarm,
        "first_alarm_example": shift.first_alarm_example or None,
        "first_alarm": list(shift.first_alarm),
        "layers": {
            layer.layer: {"score": layer.score, "threshold": layer.threshold, "peak": layer.peak}
            for layer in shift.layers
        },
        "prior": {"score": shift.prior.score, "threshold": shift.prior.threshold},
    }


def shift_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as text lines: one per layer, score against threshold."""
    if not summary["enabled"]:
        return [f"shift monitor: off ({summary['reason']})"]
    state = "ALARM" if summary["alarm"] else "no alarm"
    lines = [f"shift monitor: {state} after {summary['examples']} examples"]
    if summary["first_alarm_example"]:
        fired = ", ".join(summary["first_alarm"])
        lines[0] += f" (first alarm at example {summary['first_alarm_example']}: {fired})"
    rows = [*summary["layers"].items(), ("prior", summary["prior"])]
    for name, values in rows:
        ratio = values["score"] / values["threshold"] if values["threshold"] else float("inf")
        lines.append(
            f"  {name:<14} score {values['score']:.4g}  threshold {values['threshold']:.4g}"
            f"  ({ratio:.2f} of it)"
        )
    return lines
