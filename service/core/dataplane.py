"""The data plane: one transport-free object with one method per protocol operation, which every
adapter (V2 gRPC, the domain API, V2 REST) calls.

A call goes through it in three steps, the same for every protocol:

1. `admit`, as the transport accepts the call (a stream: once, for its whole life): the bearer
   token, the drain and the in-flight bound; `release` when it ends. Then `begin`, per call or
   stream message: the size limit. A refusal is counted like any other answer.
2. the operation (`infer`, `model_metadata`, ...), on plain values: it resolves the model
   version the request names, which then answers and is charged for the call (its in-flight
   gauge and series), checks the request against the model, runs it (metrics, predicted
   classes, the shift monitor's update) and returns plain values.
3. `finish`: the call's status and duration in the metrics, the access log.

Steps 1 and 3 are `core/call_cycle.py`'s; the operations are this module's.

The adapter decodes its protocol before the operation and encodes the answer after; it knows
no model, and the data plane knows no protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from foldserve._proto.inference.model_config_pb2 import ModelConfig
from foldserve.core import parameters, reports, validate
from foldserve.core.call import Call
from foldserve.core.call_cycle import CallCycle, CallPolicy
from foldserve.core.candidate_control import candidate_action
from foldserve.core.classification import classified_outputs, classify_outputs
from foldserve.core.errors import RequestError, Status, invalid
from foldserve.core.gate import Gate
from foldserve.core.graph import softmax
from foldserve.core.interface import examples, graph_feeds, served_outputs
from foldserve.core.metrics import VersionMetrics
from foldserve.core.model import Model
from foldserve.core.repository import Repository
from foldserve.core.shared_memory import RegionStatus, SystemSharedMemory
from foldserve.core.shared_tensors import Claim, uses_shared_memory
from foldserve.core.shift.monitor import ShiftMonitor
from foldserve.core.stats import VersionStats
from foldserve.core.types import Classification, IndexEntry, InferRequest, InferResponse
from foldserve.core.versions import LoadedVersion

if TYPE_CHECKING:
    from foldserve.core.adapt.serving import CandidateBuilder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerInfo:
    """What `ServerMetadata` answers: the server's name, version and protocol extensions."""

    name: str
    version: str
    extensions: tuple[str, ...] = ()


class DataPlane(CallCycle):
    """Every protocol operation of the server, on plain values (and the life of a call around
    them: `CallCycle`).

    Args:
        repository: the served model's versions.
        gate: admission: the drain and the in-flight bound, shared by every protocol.
        policy: size limit, token, access log.
        server: what `server_metadata` answers.
        shared_memory: the system shared memory regions (`--shared-memory`; default: off).
        control: how a model control command is applied, (action, name, detail): "load",
            "unload", or a candidate version's (`core.candidate`); default: on `repository`
            (several server processes do it on every one of them).
    """

    def __init__(
        self,
        repository: Repository,
        gate: Gate,
        policy: CallPolicy,
        server: ServerInfo,
        shared_memory: SystemSharedMemory | None = None,
        control: Callable[[str, str, tuple[str, ...]], None] | None = None,
    ) -> None:
        super().__init__(repository, gate, policy)
        self._server = server
        self.control = control or self.repository.apply
        self.candidates: CandidateBuilder | None = None  # with --adapt-reservoir
        # Triton's system shared memory regions of this process (off unless given one on).
        self.shared_memory = shared_memory or SystemSharedMemory(enabled=False)

    # --- the operations -----------------------------------------------------------------------

    def server_live(self, call: Call) -> bool:
        return True

    def server_ready(self, call: Call) -> bool:
        """Ready until a drain starts (then balancers and probes stop sending)."""
        return self._ready and not self.gate.draining

    def server_metadata(self, call: Call) -> ServerInfo:
        return self._server

    def model_ready(self, call: Call, name: str, version: str, fields: tuple[str, str]) -> bool:
        """Whether a model (version) is loaded and serving: false, not an error, for one that
        is not (unknown, failed to load, unloaded), as Triton answers."""
        try:
            self._resolve(call, name, version, fields)
        except RequestError as error:
            if error.status is not Status.NOT_FOUND:
                raise
            return False
        return True

    def model_metadata(
        self, call: Call, name: str, version: str, fields: tuple[str, str]
    ) -> tuple[Model, list[str]]:
        """The model a request names, and every loaded version of it (newest first)."""
        served = self._resolve(call, name, version, fields)
        model = served.model
        return model, [v.version for v in self.repository.model(model.name).versions]

    def describe(
        self, call: Call, name: str, version: str, fields: tuple[str, str]
    ) -> tuple[Model, ShiftMonitor | None, Model | None]:
        """The model a request names, its shift monitor (None when it runs none) and its model's
        candidate version (None: none)."""
        served = self._resolve(call, name, version, fields)
        candidate = self.repository.model(name or None).candidate.loaded
        return served.model, served.runner.monitor, candidate and candidate.model

    def infer(self, call: Call, request: InferRequest) -> InferResponse:
        """Run one inference request.

        An output requested with the `classification` parameter is answered with its top
        classes (Triton's classification extension, `core.classification`).

        Raises:
            RequestError: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for inputs
                or outputs that do not fit the model, FAILED_PRECONDITION for a `classify`
                request to a model that is not classifier-shaped, DEADLINE_EXCEEDED; see
                `core.shared_tensors` for tensors in shared memory.
        """
        if uses_shared_memory(request):
            return self._infer_shared(call, request)
        if request.id:
            call.request_id = request.id
        fields = ("model_name", "model_version")
        served = self._resolve(call, request.model_name, request.model_version, fields)
        model = served.model
        deadline = _deadline(call.deadline, parameters.check(request))
        timing = call.timing = served.stats.start(call)
        feeds = validate.feeds(model, request)
        names = validate.output_names(model, request)
        ranked = classified_outputs(model, request)
        feeds = graph_feeds(model, request, feeds)
        timing.mark_checked(examples(model, request))
        series = served.runner.metrics
        series.decode.observe(time.perf_counter() - call.decode_started)
        outputs = served.runner.run(feeds, names, deadline)
        timing.mark_ran()
        classify_outputs(model, ranked, outputs)
        classification = _classification(model, outputs) if request.classify else None
        outputs = served_outputs(model, request, outputs)
        return InferResponse(model.name, model.version, request.id, outputs, classification)

    def _infer_shared(self, call: Call, request: InferRequest) -> InferResponse:
        """`infer` of a request whose tensors name shared memory regions, held until the
        outputs are written."""
        with Claim(self.shared_memory, request) as claim:
            return claim.answer(self.infer(call, claim.request))

    def model_config(
        self, call: Call, name: str, version: str, fields: tuple[str, str]
    ) -> ModelConfig:
        """What Triton reports as the configuration of the version a request names."""
        served = self._resolve(call, name, version, fields)
        policy = self.repository.model(served.model.name).policy
        return reports.model_config(served.model, policy, self.repository.settings.instances)

    def model_statistics(
        self, call: Call, name: str, version: str, fields: tuple[str, str]
    ) -> list[VersionStats]:
        """Triton's statistics of every model, of one (`name`) or of a version of it."""
        return reports.statistics(self.repository, name, version, fields)

    def repository_index(self, call: Call, repository: str, ready_only: bool) -> list[IndexEntry]:
        """Every model and version of the repository, with its state (`Repository.index`).

        Raises:
            RequestError: NOT_FOUND for a repository name other than "".
        """
        self._check_repository(repository)
        return self.repository.index(ready_only)

    def load_model(
        self, call: Call, repository: str, name: str, parameters: Mapping[str, object] = {}
    ) -> None:
        """Load a model of the repository, or load it again (model control, `explicit` mode);
        with parameter `candidate`, build (`adapt`), `promote` or `discard` the model's
        candidate version instead (any mode). Slow (it reads and checks the files, or adapts
        a model): run it off the serving loop.

        Raises:
            RequestError: see `Repository.load` and `core.candidate_control`; NOT_FOUND for a
                repository other than ""; INVALID_ARGUMENT for another parameter or value.
        """
        self._check_repository(repository)
        action = candidate_action(parameters)
        if action is None:
            self.repository.check_control("load")
            self.control("load", name, ())
        elif action == "adapt":
            if self.candidates is None:
                self.repository.model(name)
                raise RequestError(
                    Status.FAILED_PRECONDITION,
                    "parameters.candidate: this server keeps no inputs (--adapt-reservoir 0)",
                )
            self.candidates.build(name)
        else:
            self.control(action, name, ())

    def unload_model(self, call: Call, repository: str, name: str) -> None:
        """Unload a model (model control); its calls in flight finish.

        Raises:
            RequestError: see `Repository.unload`; NOT_FOUND for a repository other than "".
        """
        self._check_repository(repository)
        self.repository.check_control("unload")
        self.control("unload", name, ())

    # --- system shared memory (Triton's extension; `core.shared_memory`) ---------------------

    def shared_memory_status(self, call: Call, name: str) -> list[RegionStatus]:
        """The registered regions ("": all); see `SystemSharedMemory.status`."""
        return self.shared_memory.status(name)

    def shared_memory_register(
        self, call: Call, name: str, key: str, offset: int, byte_size: int
    ) -> None:
        """Register a region; see `SystemSharedMemory.register`."""
        self.shared_memory.register(name, key, offset, byte_size)

    def shared_memory_unregister(self, call: Call, name: str) -> None:
        """Unregister a region ("": all); see `SystemSharedMemory.unregister`."""
        self.shared_memory.unregister(name)

    @staticmethod
    def _check_repository(repository: str) -> None:
        if repository:
            raise RequestError(
                Status.NOT_FOUND,
                f"repository_name: unknown repository {repository!r}; this server has one, "
                "named ''",
            )

    def _resolve(
        self, call: Call, name: str, version: str, fields: tuple[str, str]
    ) -> LoadedVersion:
        """The version a request names; from here on it answers the call (its series count it)."""
        served = self.repository.resolve(name, version, fields)
        series: VersionMetrics = served.runner.metrics
        series.in_flight.inc()
        call.series = series
        return served


def _deadline(deadline: float | None, timeout: float | None) -> float | None:
    """The earlier of the call's deadline and the request's own `timeout` (seconds from now)."""
    if timeout is None:
        return deadline
    own = time.monotonic() + timeout
    return own if deadline is None else min(deadline, own)


def _classification(model: Model, outputs: dict) -> Classification:
    classifier = model.require_classifier()
    logits = outputs[classifier.logits]
    if classifier.probabilities is not None:
        probabilities = outputs[classifier.probabilities]
    else:
        probabilities = softmax(logits.copy())
    return Classification(logits.argmax(axis=1), probabilities, model.class_labels)


def required(name: str, field: str, served: list[str]) -> None:
    """The V2 protocol makes the model name required (the domain API does not).

    Raises:
        RequestError: INVALID_ARGUMENT naming `field`.
    """
    if not name:
        raise invalid(f"{field}: required by the V2 protocol; the models served are {served}")
