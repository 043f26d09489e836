"""The `shm` rows: system shared memory misused under load, `--shared-memory on`.

The load (64 calls in flight, gRPC) reads its input from a registered region ("in", [16, 64]
FP32). Regions belong to one server process, so the rows serve with one worker. Every object is
[GUARD | region | GUARD] with the guards filled with a canary: a row checks that no guard byte
changed (nothing written outside a region) and that answers read from a region equal the same
data sent in the request (nothing read outside it).

- offsets and sizes past a region, over gRPC and REST, and a registration past the object: each
  refused INVALID_ARGUMENT naming its field;
- a region unregistered and registered again, over and over, while the load's calls use it:
  each call answered OK or NOT_FOUND (the region was not registered when it asked), nothing
  else, and no crash;
- a key naming another process's object: the server cannot tell who created an object (any
  process on the host that can name it may register it, as in Triton); the row shows it reads
  exactly that region, then that the owner shrinking the object under the calls gets
  INVALID_ARGUMENT, not a crash (SIGBUS), and that once unlinked the key is refused.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from foldserve.bench.chaos.harness import Row, serve
from foldserve.bench.chaos.kill import _calls
from foldserve.bench.chaos.load import Load, statuses
from foldserve.bench.chaos.shm_calls import ShmClient, bad_calls, shm_request
from foldserve.bench.chaos.shm_objects import GUARD, ShmObject, values

ROWS = 16  # examples per call
FULL = {"cycles": 500, "foreign": 2.0}
SHORT = {"cycles": 20, "foreign": 0.3}


def _window(load: Load, start: float) -> dict:
    return statuses([c for c in load.calls if c.start >= start])


async def _past_region_row(serving, load: Load, client: ShmClient, objects: dict) -> Row:
    before, start = serving.rss_mb(), time.monotonic()
    data = objects["in"].read(objects["in"].size)
    answers = await bad_calls(client, serving, objects)
    await _calls(load, 200)
    counted = _window(load, start)
    wrong = [name for name, (ok, _) in answers.items() if not ok]
    guards = all(o.guards_whole() for o in objects.values())
    same = objects["in"].read(objects["in"].size) == data
    errors = sum(n for k, n in counted.items() if k != "OK")
    passed = not wrong and guards and same and not errors and serving.process.poll() is None
    example = next(iter(answers.values()))[1]
    saw = (
        f"{len(answers) - len(wrong)} of {len(answers)} misuses refused INVALID_ARGUMENT naming "
        f"the field (e.g. {example[:80]!r}){'; wrong: ' + ', '.join(wrong) if wrong else ''}; "
        f"guards {'whole' if guards else 'BROKEN'}, "
        f"input region {'unchanged' if same else 'CHANGED'}"
    )
    bound = "each INVALID_ARGUMENT naming its field; guards whole; 0 failed"
    return Row("offsets and sizes past a region, grpc and http", bound, passed, counted, saw,
               "server alive, load unaffected", (before, serving.rss_mb()))  # fmt: skip


async def _unregister_row(serving, load: Load, client: ShmClient, objects: dict, n: int) -> Row:
    before, start = serving.rss_mb(), time.monotonic()
    size = objects["in"].size
    for cycle in range(n):
        await client.unregister("in")
        if cycle % 10 == 0:  # what a call sees meanwhile
            refused = await client.infer(shm_request(client.spec, "in", ROWS))
        await asyncio.sleep(0.001 * (cycle % 3))
        await client.register("in", objects["in"].key, size, GUARD)
        await asyncio.sleep(0.001 * (cycle % 4))
    registered = time.monotonic()
    await _calls(load, 200)
    counted = _window(load, start)
    after_ok = [c for c in load.calls if c.start > registered and c.status == "OK"]
    recovered = min((c.end for c in after_ok), default=float("nan")) - registered
    correct = await client.same_as_inline(objects["in"], "in", ROWS)
    guards = objects["in"].guards_whole()
    other = {k: v for k, v in counted.items() if k not in ("OK", "NOT_FOUND")}
    passed = not other and guards and correct and serving.process.poll() is None
    saw = (
        f"{n} unregister/register cycles; calls OK or NOT_FOUND only ({refused[1][:70]!r}); "
        f"answers {'equal' if correct else 'DIFFER from'} the inline ones; guards "
        f"{'whole' if guards else 'BROKEN'}; server {'alive' if passed else 'check'}"
    )
    bound = "OK or NOT_FOUND naming the field, nothing else; answers right; guards whole"
    recovery = f"first OK {recovered * 1e3:.0f} ms after the last registration"
    return Row("region unregistered while calls use it, grpc", bound, passed, counted, saw,
               recovery, (before, serving.rss_mb()))  # fmt: skip


async def _owner(name: str, size: int, seed: int) -> asyncio.subprocess.Process:
    owner = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "foldserve.bench.chaos.shm_objects", name, str(size), str(seed),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await owner.stdout.readline()  # "ready"
    return owner


async def _tell(owner: asyncio.subprocess.Process, command: str) -> str:
    owner.stdin.write(command.encode() + b"\n")
    await owner.stdin.drain()
    return (await owner.stdout.readline()).decode().strip()


async def _foreign_row(serving, load: Load, client: ShmClient, seconds: float) -> Row:
    before, start = serving.rss_mb(), time.monotonic()
    size = ROWS * client.features * 4
    name = f"fschaos_owner_{os.getpid()}"
    owner = await _owner(name, size, 7)
    try:
        accepted = await client.register("foreign", "/" + name, size, GUARD)
        exact = await client.answers_equal("foreign", values(size, 7), ROWS)
        whole = await _tell(owner, "check") == "whole"
        theirs = Load(load.target, shm_request(client.spec, "foreign", ROWS), "grpc", 8, 2)
        running = asyncio.ensure_future(theirs.run())
        await asyncio.sleep(seconds)
        await _tell(owner, "shrink")
        shrunk = time.monotonic()
        await asyncio.sleep(seconds)
        refused = await client.infer(shm_request(client.spec, "foreign", ROWS))
        theirs.stop()
        await running
        await _tell(owner, "unlink")
        await client.unregister("foreign")
        gone = await client.register("foreign", "/" + name, size)
        missing = await client.register("nothing", f"/fschaos_missing_{os.getpid()}", size)
    finally:
        await _tell(owner, "exit")
        await owner.wait()
    after = statuses([c for c in theirs.calls if c.start > shrunk + 0.05])
    counted = _window(load, start)
    errors = sum(n for k, n in counted.items() if k != "OK")
    alive = serving.process.poll() is None
    passed = (accepted[0] == "OK" and exact and whole and set(after) <= {"INVALID_ARGUMENT"}
              and gone[0] == missing[0] == "INVALID_ARGUMENT" and not errors and alive)  # fmt: skip
    saw = (
        f"registered ({accepted[0]}), read exactly its region ({exact}), owner's guards "
        f"{'whole' if whole else 'BROKEN'}; shrunk by its owner: {dict(after)} "
        f"({refused[1][:60]!r}); unlinked: {gone[0]} ({gone[1][:50]!r})"
    )
    bound = "reads only that region; shrunk: INVALID_ARGUMENT, no crash; 0 failed elsewhere"
    return Row("key naming another process's object, grpc", bound, passed, counted, saw,
               f"server {'alive' if alive else 'DEAD'}", (before, serving.rss_mb()))  # fmt: skip


async def shm_rows(args, workdir: Path, short: bool) -> list[Row]:
    sizes = SHORT if short else FULL
    flags = ["--model", str(args.model), "--workers", "1", "--shared-memory", "on",
             "--poll-seconds", "0"]  # fmt: skip
    with serve(flags, workdir, "shm") as serving:
        client = ShmClient(serving, args.model)
        tag = f"fschaos_{os.getpid()}"
        objects = {
            "in": ShmObject(f"{tag}_in", ROWS * client.features * 4),
            "small": ShmObject(f"{tag}_small", 40),
            "out": ShmObject(f"{tag}_out", 4096),
        }
        try:
            objects["in"].write(values(objects["in"].size, 0))
            for name, made in objects.items():
                await client.register(name, made.key, made.size, GUARD)
            load = Load(serving.target("grpc"), shm_request(client.spec, "in", ROWS), "grpc",
                        args.in_flight)  # fmt: skip
            running = asyncio.ensure_future(load.run())
            await _calls(load, 300)
            rows = [await _past_region_row(serving, load, client, objects)]
            rows.append(await _unregister_row(serving, load, client, objects, sizes["cycles"]))
            rows.append(await _foreign_row(serving, load, client, sizes["foreign"]))
            load.stop()
            await running
        finally:
            await client.close()
            for made in objects.values():
                made.close()
    return rows
