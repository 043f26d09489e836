"""The suite's plots, drawn from its JSON result with matplotlib (Agg, no display needed):
the sequential latency CDF, throughput against calls in flight (a panel per workload, a line per
server), and against worker processes.

matplotlib is in the `dev` extra only (the serving install stays small); without it `write`
draws nothing and says so, and the tables are still printed.
"""

from __future__ import annotations

from pathlib import Path

from foldserve.bench.suite.rounds import IN_FLIGHT, WORKERS
from foldserve.bench.suite.workloads import UNARY

FILES = {
    "cdf": "latency_cdf.png",
    "in_flight": "throughput_in_flight.png",
    "workers": "throughput_workers.png",
}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_axis(axis, ticks: list[int] | None = None) -> None:
    # Log scale, but ticks read 200, 500, 1000 rather than 2×10², and no crowded minor labels.
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    if ticks:
        axis.set_xticks(ticks)
    else:
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_formatter(NullFormatter())


def _servers(result: dict) -> list[str]:
    return [server["name"] for server in result["servers"]]


def _panels(plt, workloads: list[str]):
    """A figure with a panel per workload (at least one)."""
    count = max(len(workloads), 1)
    figure, axes = plt.subplots(1, count, figsize=(5 * count, 4), sharey=True, squeeze=False)
    return figure, list(axes[0])


def _cdf(plt, result: dict, path: Path) -> None:
    workloads = [w for w in UNARY if result["cdf"].get(w)]
    figure, axes = _panels(plt, workloads)
    for axis, workload in zip(axes, workloads, strict=False):
        for server in _servers(result):
            curve = result["cdf"].get(workload, {}).get(server)
            if curve:
                axis.plot(curve["latency_us"], curve["quantile"], label=server)
        axis.set_xscale("log")
        _plain_log_axis(axis)
        axis.set_title(f"{workload}, sequential")
        axis.set_xlabel("latency, µs (log)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of calls")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _errorbars(axis, xs: list[int], entries: list[dict | None], label: str) -> None:
    points = [(x, e) for x, e in zip(xs, entries, strict=True) if e]
    if not points:
        return
    medians = [e["median"] for _, e in points]
    below = [e["median"] - e["min"] for _, e in points]
    above = [e["max"] - e["median"] for _, e in points]
    axis.errorbar(
        [x for x, _ in points], medians, yerr=[below, above], marker="o", capsize=3, label=label
    )


def _in_flight(plt, result: dict, path: Path) -> None:
    workloads = [w for w in UNARY if result[IN_FLIGHT].get(w)]
    figure, axes = _panels(plt, workloads)
    for axis, workload in zip(axes, workloads, strict=False):
        xs: list[int] = []
        for server in _servers(result):
            levels = result[IN_FLIGHT].get(workload, {}).get(server, {})
            if not levels:
                continue
            xs = sorted(int(level) for level in levels)
            entries = [levels[str(x)].get("calls_per_s") for x in xs]
            _errorbars(axis, xs, entries, server)
        axis.set_xscale("log", base=2)
        _plain_log_axis(axis, xs)
        axis.set_title(workload)
        axis.set_xlabel("calls in flight")
        axis.grid(True, alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[0].set_ylabel("calls/s (median, min–max)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _workers(plt, result: dict, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5, 4))
    workers = result[WORKERS]
    xs = sorted(int(count) for count in workers)
    _errorbars(axis, xs, [workers[str(x)].get("calls_per_s") for x in xs], "foldserve Predict")
    failed = [f"{x} workers: did not start" for x in xs if "calls_per_s" not in workers[str(x)]]
    if failed:
        axis.text(0.02, 0.02, "\n".join(failed), transform=axis.transAxes, color="darkred")
    axis.set_xticks(xs)
    axis.set_ylim(bottom=0)
    axis.set_xlabel("foldserve serve --workers")
    axis.set_ylabel(f"calls/s at {result['meta']['target_in_flight']} in flight")
    axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(result: dict, out: Path) -> list[Path] | None:
    """Draw every plot into `out`; the paths written, or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    paths = []
    for name, draw in (("cdf", _cdf), ("in_flight", _in_flight), ("workers", _workers)):
        path = out / FILES[name]
        draw(plt, result, path)
        paths.append(path)
    return paths
