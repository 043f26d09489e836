"""The paths of the V2 REST protocol (and Triton's extensions on HTTP): which operation each
names, with the model name and version in it."""

from __future__ import annotations

import re
from typing import NamedTuple

from foldserve.api.rest_shared_memory import shared_memory_route


class Endpoint(NamedTuple):
    """An operation and the HTTP verb it answers."""

    verb: str
    method: str


STATIC_ROUTES = {
    "/v2": Endpoint("GET", "ServerMetadata"),
    "/v2/health/live": Endpoint("GET", "ServerLive"),
    "/v2/health/ready": Endpoint("GET", "ServerReady"),
    "/v2/repository/index": Endpoint("POST", "RepositoryIndex"),
    "/v2/models/stats": Endpoint("GET", "ModelStatistics"),
}
MODEL_ROUTES = {
    "": Endpoint("GET", "ModelMetadata"),
    "/ready": Endpoint("GET", "ModelReady"),
    "/infer": Endpoint("POST", "ModelInfer"),
    "/config": Endpoint("GET", "ModelConfig"),
    "/stats": Endpoint("GET", "ModelStatistics"),
}
_MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(|/ready|/infer|/config|/stats)")
_CONTROL_PATH = re.compile(r"/v2/repository/models/([^/]+)/(load|unload)")
CONTROL_ROUTES = {
    "load": Endpoint("POST", "RepositoryModelLoad"),
    "unload": Endpoint("POST", "RepositoryModelUnload"),
}


def route(path: str) -> tuple[Endpoint, str, str] | None:
    """The endpoint a path names, with the model name (or shared memory region) and version in
    it ("" where none)."""
    endpoint = STATIC_ROUTES.get(path)
    if endpoint is not None:
        return endpoint, "", ""
    found = _MODEL_PATH.fullmatch(path)
    if found is not None:
        name, version, tail = found.groups()
        return MODEL_ROUTES[tail], name, version or ""
    control = _CONTROL_PATH.fullmatch(path)
    if control is not None:
        return CONTROL_ROUTES[control.group(2)], control.group(1), ""
    shared = shared_memory_route(path)  # the region's name stands where a model's would
    return None if shared is None else (Endpoint(*shared[:2]), shared[2], "")
