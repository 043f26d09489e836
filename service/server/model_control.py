"""Model control (RepositoryModelLoad/Unload: loads and unloads in `explicit` mode, and any
model's candidate version, `core.candidate`) across the workers of `--workers N`.

A client's load or unload reaches one worker, the one its connection landed on; every worker
must do it, or the model would be served by some connections and unknown on others. So a
worker does not act on its own: it sends the command to the supervisor (`WorkerControl`), which
keeps the list of models to load (a worker started later loads those) and passes the command to
every live worker in the same order (`ControlRelay`); each applies it and answers. The client's
call returns once every worker has answered, with the first worker's error, if any (its own
first: a model that fails to load fails the same way everywhere). A candidate version is kept
in the same way: a worker started later serves it too.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Empty

from foldserve.core.errors import RequestError, Status
from foldserve.core.priority import lower_this_thread, switching_often
from foldserve.core.repository import Repository

log = logging.getLogger(__name__)
_REPLAYS = itertools.count()
CONTROL_SECONDS = 120.0  # how long a command may take on every worker (a load reads files)
TICK_SECONDS = 0.5  # how often the relay looks for workers that died before they answered
Answer = tuple[str, str] | None  # (status name, message) of a worker's error; None: done


class WorkerControl:
    """A worker's side: commands go to the supervisor (`__call__`); commands from it are
    applied in order by a thread of their own (`attach`)."""

    def __init__(self, events, inbox) -> None:
        self._events = events  # to the supervisor
        self._inbox = inbox  # from the supervisor
        self._pid = os.getpid()
        self._ids = itertools.count()
        self._waiting: dict[str, tuple[threading.Event, list]] = {}
        self._repository: Repository | None = None

    def attach(self, repository: Repository) -> None:
        """Apply the supervisor's commands to `repository`: those already waiting (a new
        worker's candidates) before returning, the others as they come."""
        self._repository = repository
        while True:
            try:
                self._handle(*self._inbox.get_nowait())
            except Empty:
                break
        threading.Thread(target=self._run, name="model-control", daemon=True).start()

    def __call__(self, action: str, name: str, detail: tuple[str, ...] = ()) -> None:
        """Apply a command to model `name` on every worker (`Repository.apply`); raises the
        first worker's error."""
        command = f"{self._pid}-{next(self._ids)}"
        done, answers = threading.Event(), []
        self._waiting[command] = (done, answers)
        self._events.put(("control", self._pid, (command, action, name, detail)))
        try:
            if not done.wait(CONTROL_SECONDS):
                raise RequestError(
                    Status.UNAVAILABLE,
                    f"model_name: {action} of model {name!r} did not finish on every worker "
                    f"in {CONTROL_SECONDS:.0f} s",
                )
        finally:
            self._waiting.pop(command, None)
        for pid, answer in sorted(answers, key=lambda each: each[0] != self._pid):
            if answer is not None:
                status, message = answer
                prefix = "" if pid == self._pid else f"worker {pid}: "
                raise RequestError(Status[status], prefix + message)

    def _apply(self, action: str, name: str, detail: tuple[str, ...]) -> Answer:
        try:
            switching_often(self._repository.apply, action, name, detail)  # type: ignore[union-attr]
        except RequestError as error:
            return error.status.name, error.message
        except Exception as exc:  # a bug must not leave the supervisor waiting
            log.exception("model control: %s %s failed", action, name)
            return Status.INTERNAL.name, f"model_name: {action} of model {name!r} failed: {exc}"
        return None

    def _run(self) -> None:
        lower_this_thread()  # it loads models: the serving loop comes first
        while True:
            self._handle(*self._inbox.get())

    def _handle(self, kind: str, detail) -> None:
        if kind == "apply":
            command, action, name, arguments = detail
            answer = self._apply(action, name, arguments)
            self._events.put(("applied", self._pid, (command, answer)))
        elif kind == "done":
            command, answers = detail
            waiting = self._waiting.get(command)
            if waiting is not None:
                waiting[1].extend(answers)
                waiting[0].set()


@dataclass
class _Pending:
    origin: int
    waiting: set[int]
    answers: list[tuple[int, Answer]] = field(default_factory=list)
    deadline: float = 0.0


class ControlRelay:
    """The supervisor's side: a thread that reads the workers' events, passes each command to
    every live worker and answers the worker it came from once all have.

    Args:
        events: the queue every worker writes to.
        inboxes: the live workers' queues, by pid (called under `lock`).
        loaded: the models to load (`--load-model`), kept up to date for new workers.
        lock: held while commands are passed on and while workers are started.

    `candidates` holds each model's candidate command, which a new worker applies (`replay`).
    """

    def __init__(self, events, inboxes: Callable[[], dict], loaded: list[str], lock) -> None:
        self._events = events
        self._inboxes = inboxes
        self.loaded = loaded
        self.candidates: dict[str, tuple[str, ...]] = {}
        self.lock = lock
        self._pending: dict[str, _Pending] = {}
        self._thread = threading.Thread(target=self._run, name="control-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        lower_this_thread()  # it loads models: the serving loop comes first
        while True:
            try:
                kind, pid, detail = self._events.get(timeout=TICK_SECONDS)
            except Empty:
                self._expire()
                continue
            if kind == "control":
                self._relay(pid, *detail)
            elif kind == "applied":
                command, answer = detail
                self._answered(command, pid, answer)

    def _relay(self, origin: int, command: str, action: str, name: str, detail) -> None:
        with self.lock:
            self._remember(action, name, detail)
            inboxes = self._inboxes()
            self._pending[command] = _Pending(
                origin, set(inboxes), deadline=time.monotonic() + CONTROL_SECONDS
            )
            for inbox in inboxes.values():
                inbox.put(("apply", (command, action, name, detail)))

    def _remember(self, action: str, name: str, detail: tuple[str, ...]) -> None:
        """What a worker started later must do: load the models, serve the candidates."""
        if action == "load" and name not in self.loaded:
            self.loaded.append(name)
        elif action == "unload" and name in self.loaded:
            self.loaded.remove(name)
        if action == "candidate":
            self.candidates[name] = detail
        elif action != "load":  # unload, promote, discard: no candidate any more
            self.candidates.pop(name, None)

    def replay(self, inbox) -> None:
        """Give a new worker the candidates (called under `lock`; nobody waits for its answer)."""
        for name, detail in self.candidates.items():
            inbox.put(("apply", (f"replay-{next(_REPLAYS)}", "candidate", name, detail)))

    def _answered(self, command: str, pid: int, answer: Answer) -> None:
        pending = self._pending.get(command)
        if pending is None:
            return
        pending.waiting.discard(pid)
        pending.answers.append((pid, answer))
        self._finish_if_done(command, pending)

    def _expire(self) -> None:
        """A worker that died before it answered starts again with `loaded`: it needs no answer."""
        with self.lock:
            live = set(self._inboxes())
        for command, pending in list(self._pending.items()):
            pending.waiting &= live
            if time.monotonic() > pending.deadline:
                pending.waiting.clear()
            self._finish_if_done(command, pending)

    def _finish_if_done(self, command: str, pending: _Pending) -> None:
        if pending.waiting:
            return
        del self._pending[command]
        with self.lock:
            inbox = self._inboxes().get(pending.origin)
        if inbox is not None:
            inbox.put(("done", (command, pending.answers)))
