"""Schemas for the custom kinds in deploy/k8s/, checked offline (no cluster, no CRDs).

kubernetes-validate ships the core Kubernetes schemas but none for custom resources, and the
upstream CRDs (KServe's, the Prometheus Operator's) are not a package here. So these schemas are
written here from the published API references (and KServe's Go types), for the fields
foldserve's manifests may use, and are strict: an unknown or misspelt field, a wrong type or a
missing required field fails. Every embedded core type is checked against kubernetes-validate's
own strict schema of it: `InferenceService.spec.predictor` is KServe's PredictorSpec, a core
PodSpec (containers, probes, resources, ...) plus KServe's component fields, and its `model` is
a ModelSpec, a core Container plus the model's format, runtime and storage;
`ClusterServingRuntime.spec` is a ServingRuntimeSpec, the model formats and protocols it serves
plus ServingRuntimePodSpec, a few PodSpec fields (containers, volumes, ...) with their core
schemas; `ServiceMonitor.spec.selector` is a core LabelSelector. What they cannot catch: a field
KServe or the Operator added, renamed or dropped in a release these schemas were not written from
(KServe v1beta1 and v1alpha1 as of 0.1x; monitoring.coreos.com v1 as of the 0.7x operators).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

KUBERNETES_VERSION = "1.33.0"
CORE = "#/$defs/io.k8s.api.core.v1."
META = "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1."
# A Prometheus duration as the Operator takes it (e.g. 15s, 1m30s; no y, w or d units here).
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}


@cache
def core_definitions() -> dict[str, Any]:
    """kubernetes-validate's strict definitions of every core type (its `$defs`)."""
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = root / f"v{KUBERNETES_VERSION}-local-strict" / "_definitions.json"
    return json.loads(path.read_text())["$defs"]


def _kind(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {"$ref": META + "ObjectMeta"},
            "spec": spec,
        },
        "$defs": core_definitions(),
    }


# KServe's InferenceServiceProtocol values.
PROTOCOLS = {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]}
STRING = {"type": "string"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _model_spec() -> dict[str, Any]:
    """KServe v1beta1 ModelSpec: the model's format and runtime, PredictorExtensionSpec's storage
    and protocol, and a core Container inline (whose fields KServe merges over the runtime's
    container; its name is optional, KServe's is kserve-container)."""
    model = copy.deepcopy(core_definitions()["io.k8s.api.core.v1.Container"])
    model_format = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}, "version": STRING},
    }
    model["properties"].update(
        modelFormat=model_format,
        runtime=STRING,
        storageUri=STRING,
        runtimeVersion=STRING,
        protocolVersion=PROTOCOLS,
    )
    model["required"] = ["modelFormat"]
    model["additionalProperties"] = False
    return model


def _predictor_spec() -> dict[str, Any]:
    """KServe v1beta1 PredictorSpec: PodSpec inline (containers optional: a `model` names its
    runtime instead), `model`, plus ComponentExtensionSpec's fields."""
    pod = copy.deepcopy(core_definitions()["io.k8s.api.core.v1.PodSpec"])
    pod.pop("required", None)
    pod["anyOf"] = [{"required": ["model"]}, {"required": ["containers"]}]
    integer = {"type": "integer", "minimum": 0}
    pod["properties"].update(
        model=_model_spec(),
        minReplicas=integer,
        maxReplicas=integer,
        scaleTarget=integer,
        scaleMetric={"enum": ["cpu", "memory", "concurrency", "rps"]},
        containerConcurrency=integer,
        timeout=integer,
        canaryTrafficPercent={"type": "integer", "minimum": 0, "maximum": 100},
        labels=STRING_MAP,
        annotations=STRING_MAP,
    )
    pod["additionalProperties"] = False
    return pod


def inference_service_schema() -> dict[str, Any]:
    spec = {
        "type": "object",
        "additionalProperties": False,
        "required": ["predictor"],
        "properties": {"predictor": _predictor_spec()},
    }
    return _kind("serving.kserve.io/v1beta1", "InferenceService", spec)


def serving_runtime_spec() -> dict[str, Any]:
    """KServe v1alpha1 ServingRuntimeSpec, for single-model serving: the model formats and
    protocols, plus ServingRuntimePodSpec inline (these PodSpec fields with their core schemas;
    at least one container). ModelMesh's fields (endpoints, built-in adapter, storage helper,
    replicas) and workerSpec are left out: foldserve's runtime uses none."""
    pod = core_definitions()["io.k8s.api.core.v1.PodSpec"]["properties"]
    model_format = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "version": STRING,
            "autoSelect": {"type": "boolean"},
            "priority": {"type": "integer", "minimum": 1},
        },
    }
    pod_fields = ("volumes", "nodeSelector", "affinity", "tolerations", "imagePullSecrets")
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["containers"],
        "properties": {
            "supportedModelFormats": {"type": "array", "items": model_format},
            "multiModel": {"type": "boolean"},
            "disabled": {"type": "boolean"},
            "protocolVersions": {"type": "array", "items": PROTOCOLS, "uniqueItems": True},
            "containers": {**pod["containers"], "minItems": 1},
            **{name: pod[name] for name in pod_fields},
            "hostIPC": {"type": "boolean"},
            "labels": STRING_MAP,
            "annotations": STRING_MAP,
        },
    }


def cluster_serving_runtime_schema() -> dict[str, Any]:
    return _kind("serving.kserve.io/v1alpha1", "ClusterServingRuntime", serving_runtime_spec())


def service_monitor_schema() -> dict[str, Any]:
    endpoint = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "port": {"type": "string"},
            "path": {"type": "string", "pattern": "^/"},
            "scheme": {"enum": ["http", "https"]},
            "interval": DURATION,
            "scrapeTimeout": DURATION,
            "honorLabels": {"type": "boolean"},
        },
        "anyOf": [{"required": ["port"]}],
    }
    spec = {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": {"$ref": META + "LabelSelector"},
            "endpoints": {"type": "array", "minItems": 1, "items": endpoint},
            "jobLabel": {"type": "string"},
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    }
    return _kind("monitoring.coreos.com/v1", "ServiceMonitor", spec)


SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): inference_service_schema,
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): cluster_serving_runtime_schema,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): service_monitor_schema,
}


def validate_custom(resource: dict[str, Any]) -> None:
    """Validate a KServe or Prometheus Operator resource; raises jsonschema.ValidationError."""
    schema = SCHEMAS[resource["apiVersion"], resource["kind"]]()
    jsonschema.Draft202012Validator(schema).validate(resource)
