"""The errors page: every status the core can answer, with its gRPC code and HTTP status, from
the maps the adapters use (`foldserve.api.calls.GRPC_CODES`,
`foldserve.api.rest_app.HTTP_STATUS`)."""

from __future__ import annotations

import inspect
import re

from foldserve.api.calls import GRPC_CODES
from foldserve.api.rest_app import HTTP_STATUS, TOO_LARGE
from foldserve.core.errors import Status

# `NAME = number  # what it means` in the Status enum's source.
MEMBER = re.compile(r"^\s+(\w+) = \d+\s+# (.+)$", re.M)


def errors_page() -> str:
    """docs/reference/errors.md."""
    meaning = dict(MEMBER.findall(inspect.getsource(Status)))
    rows = ["| status | gRPC code | HTTP status | meaning |", "| --- | ---: | ---: | --- |"]
    for status in Status:
        code = GRPC_CODES[status].value[0]
        http = HTTP_STATUS[status]
        rows.append(f"| `{status.name}` | {code} | {http} | {meaning[status.name]} |")
    table = "\n".join(rows)
    return f"""# Errors and statuses

Generated from the status maps the adapters use (`python docs/reference_pages.py`). The core
answers a failed request with one of these statuses and a message naming the field and what was
expected; each protocol carries it its own way:

- **gRPC**: the call ends with the gRPC code and the message as its details; in a
  `PredictStream` a bad example is answered in the stream (`error {{code, status, message}}`) and
  the stream goes on.
- **HTTP/REST**: the HTTP status, with the body `{{"error": "<message>"}}`. A body over
  `--max-message-bytes` is {TOO_LARGE} (`RESOURCE_EXHAUSTED`, as for the busy server's 429).

{table}

What the caller sent is never `INTERNAL` (500), and a request that cannot be valid is never
`OK`. `UNAVAILABLE` is answered only for a call that did not run, so a client (or the balancer)
may retry it elsewhere. The messages, condition by condition:
[Serving](../guides/serving.md#errors); REST's: [HTTP/REST](../guides/rest.md#errors).
"""
