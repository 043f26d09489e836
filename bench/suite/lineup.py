"""Who is measured on what: the servers of a run (baselines on their runtimes, foldserve per
worker count, the peer), which of them came up, and which workloads each answers.

Every workload a server is meant to serve is first sent once (`workloads.reply_bytes`). What
happens when it is not answered depends on whose it is:

- a baseline, or foldserve's gRPC: nothing is worth measuring (`SetupError`, exit 2);
- foldserve's REST (no `http_port=` yet, or a refusal), a baseline runtime that did not start,
  a worker count that did not: `missing` (the rest is measured, exit 1);
- the peer's: `not_served`, a fact about the peer (MLServer has no binary tensor extension),
  reported beside its figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from foldserve.bench.suite.plan import BASELINE_KINDS, PEERS
from foldserve.bench.suite.servers import (
    FOLDSERVE,
    NoHttpPort,
    Server,
    ServerStartError,
    kind_of,
)
from foldserve.bench.suite.workloads import PREDICT, REST, Workload, WorkloadError, reply_bytes


class SetupError(RuntimeError):
    """Nothing can be measured; the message says why."""


@dataclass
class Lineup:
    """The servers that came up, by name in table order; foldserve by worker count; what each
    answers (`serving`, `replies`); what is missing and what the peer does not serve, each a
    list of {"server", "workload", "why"}."""

    servers: dict[str, Server] = field(default_factory=dict)
    workers: dict[int, Server] = field(default_factory=dict)
    serving: dict[str, list[str]] = field(default_factory=dict)
    replies: dict[tuple[str, str], int] = field(default_factory=dict)
    missing: list[dict[str, str]] = field(default_factory=list)
    not_served: list[dict[str, str]] = field(default_factory=list)
    start_errors: dict[int, str] = field(default_factory=dict)

    def note(self, server: str, workload: str, why: str) -> None:
        entry = {"server": server, "workload": workload, "why": why}
        (self.not_served if kind_of(server) in PEERS else self.missing).append(entry)


def _started(
    started: dict[str, Server | ServerStartError], lineup: Lineup, warn: Callable[[str], None]
) -> None:
    for name, server in started.items():
        if not isinstance(server, ServerStartError):
            if server.spec.workers == 1 or kind_of(name) != FOLDSERVE:
                lineup.servers[name] = server
            if kind_of(name) == FOLDSERVE:
                lineup.workers[server.spec.workers] = server
            continue
        if name == FOLDSERVE:
            raise SetupError(str(server))
        warn(f"measuring the rest without it: {server}")
        if kind_of(name) == FOLDSERVE:
            lineup.start_errors[int(name.rsplit("-w", 1)[1])] = server.reason
        else:
            lineup.note(name, "every workload", server.reason)


def _check(lineup: Lineup, server: Server, workload: Workload) -> None:
    name = server.spec.name
    try:
        lineup.replies[(name, workload.name)] = reply_bytes(server.target_for(workload), workload)
    except (WorkloadError, NoHttpPort) as exc:
        if kind_of(name) in BASELINE_KINDS or (
            kind_of(name) == FOLDSERVE and workload.name not in REST
        ):
            raise SetupError(f"{name} does not answer {exc}") from None
        lineup.note(name, workload.name, str(exc).removeprefix(f"{workload.name}: "))
        return
    lineup.serving.setdefault(workload.name, []).append(name)


def check(
    started: dict[str, Server | ServerStartError],
    workloads: dict[str, Workload],
    warn: Callable[[str], None],
) -> Lineup:
    """The servers that came up and what each answers, from `start_all`'s result.

    Raises:
        SetupError: a baseline, or foldserve on gRPC, does not answer (or foldserve did not
            start): the run would measure nothing worth having.
    """
    lineup = Lineup()
    _started(started, lineup, warn)
    for server in lineup.servers.values():
        for name in server.spec.workloads:
            if name in workloads:
                _check(lineup, server, workloads[name])
    for count, server in list(lineup.workers.items()):
        if count == 1:
            continue
        try:
            lineup.replies[(server.spec.name, PREDICT)] = reply_bytes(
                server.target, workloads[PREDICT]
            )
        except WorkloadError as exc:
            lineup.start_errors[count] = f"{server.spec.name} does not answer {exc}"
            del lineup.workers[count]
    for entry in lineup.missing + lineup.not_served:
        warn(f"{entry['server']}, {entry['workload']}: {entry['why']}")
    return lineup
