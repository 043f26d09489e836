"""The load generator's side of the suite, against a stand-in h2load: its per-call log, its CPU,
a timed run that completes nothing, calls answered without their reply, a missing h2load."""

from __future__ import annotations

import stat
import sys
import textwrap
from pathlib import Path

import pytest

from foldserve.bench.suite import h2load, measure, workloads
from foldserve.bench.suite.workloads import PREDICT

FAKE_H2LOAD = """\
    #!{python}
    # A stand-in for h2load: logs `-n` calls (or, timed, none under a second and three from a
    # second on) and prints h2load's summary lines.
    import sys
    args = sys.argv[1:]
    if "-n" in args:
        calls = int(args[args.index("-n") + 1])
    else:
        calls = 0 if int(args[args.index("-D") + 1].removesuffix("ms")) < 1000 else 3
    log = next(a for a in args if a.startswith("--log-file=")).split("=", 1)[1]
    with open(log, "w") as sink:
        for i in range(calls):
            sink.write(f"{{1000000 + 1000 * i}}\\t200\\t{{100 + i}}\\n")
    data = calls * {reply} - {short}
    n = calls
    print(f"requests: {{n}} total, {{n}} started, {{n}} done, {{n}} succeeded, 0 failed")
    print(f"traffic: 1KB (1000) total, 10B (10) headers, {{data}}B ({{data}}) data")
"""


def _fake_h2load(tmp_path: Path, reply: int, short: int) -> str:
    path = tmp_path / "h2load"
    path.write_text(
        textwrap.dedent(FAKE_H2LOAD).format(python=sys.executable, reply=reply, short=short)
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_load_run_reads_h2load_log_and_counts_its_own_cpu(tmp_path: Path) -> None:
    generator = h2load.H2Load(h2load.find(_fake_h2load(tmp_path, reply=50, short=0)), tmp_path)
    run = generator.run("127.0.0.1:1", workloads.Workload(PREDICT, "/p", b"x"), 50, calls=4)
    assert run.done == 4 and list(run.latencies_us) == [100, 101, 102, 103]
    assert run.span_seconds == pytest.approx((3000 + 103) / 1e6)
    assert run.client_cpu_seconds > 0


class _Server:
    """Just what `measure` asks of a server."""

    target = "127.0.0.1:1"

    def cpu_seconds(self) -> float:
        return 1.0


def test_a_timed_run_that_completes_nothing_runs_once_longer(tmp_path: Path) -> None:
    generator = h2load.H2Load(h2load.find(_fake_h2load(tmp_path, reply=50, short=0)), tmp_path)
    workload = workloads.Workload(PREDICT, "/p", b"x")
    with pytest.raises(h2load.NoCallsError):
        generator.run("127.0.0.1:1", workload, 50, duration=0.2)
    load = measure.Load(duration=0.2)
    result = measure.measure(generator, _Server(), "127.0.0.1:1", workload, 50, load)
    assert result.error is None and result.figures["calls"] == 3
    assert result.figures["server_cpu_us_per_call"] == 0.0  # the stand-in's CPU never moves


def test_calls_answered_without_a_reply_are_a_load_error(tmp_path: Path) -> None:
    generator = h2load.H2Load(h2load.find(_fake_h2load(tmp_path, reply=50, short=50)), tmp_path)
    with pytest.raises(h2load.LoadError, match="1 of 4 calls came back without their reply"):
        generator.run("127.0.0.1:1", workloads.Workload(PREDICT, "/p", b"x"), 50, calls=4)


def test_a_missing_h2load_names_its_package() -> None:
    with pytest.raises(h2load.LoadError, match="nghttp2-client"):
        h2load.find("/nonexistent/h2load")
