"""deploy/k8s/ validated offline: core kinds with kubernetes-validate (strict), the KServe and
Prometheus Operator kinds with the schemas of k8s_schemas.py, and the settings that must agree
across files (probes on the health service, the drain within the grace period, selectors, ports,
the model volume, the KServe runtime and the InferenceService that names it)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from foldserve.server.app import LIVENESS_SERVICE
from tests.integration.deploy_tools import (
    DEPLOY,
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    serve_settings,
)
from tests.integration.k8s_schemas import KUBERNETES_VERSION, SCHEMAS, validate_custom

K8S = DEPLOY / "k8s"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for p in MANIFESTS for d in documents(p)}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_validates_offline(path: Path):
    for resource in documents(path):
        if (resource["apiVersion"], resource["kind"]) in SCHEMAS:
            validate_custom(resource)
        else:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_custom_schemas_reject_what_a_cluster_would():
    service = resources()["InferenceService/foldserve"]
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["predictor"]["minReplica"] = 1  # misspelt
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        validate_custom(broken)
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["predictor"]["model"]["modelFormat"] = {"nam": "onnx"}
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(broken)  # ModelSpec's format needs a name
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["predictor"]["model"]["resources"] = {"limits": {"cpu": []}}
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(broken)  # the model's core Container fields, against the core schema
    broken = yaml.safe_load(yaml.safe_dump(service))
    del broken["spec"]["predictor"]["model"]
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(broken)  # neither a model nor containers: nothing to serve
    runtime = resources()["ClusterServingRuntime/foldserve"]
    for path, value in [
        (("supportedModelFormat",), []),  # misspelt
        (("protocolVersions",), ["v3"]),
        (("supportedModelFormats", 0, "priority"), 0),
        (("containers",), []),
        (("containers", 0, "ports", 0, "containerPort"), "8080"),  # core Container, core schema
        (("terminationGracePeriodSeconds",), 20),  # a PodSpec field a runtime does not take
    ]:
        broken = yaml.safe_load(yaml.safe_dump(runtime))
        *parents, last = path
        node = broken["spec"]
        for key in parents:
            node = node[key]
        node[last] = value
        with pytest.raises(jsonschema.ValidationError):
            validate_custom(broken)
    monitor = yaml.safe_load(yaml.safe_dump(resources()["ServiceMonitor/foldserve"]))
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(monitor)


def test_kustomization_lists_the_core_manifests():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = {K8S / name for name in kustomization["resources"]}
    assert all(path.is_file() for path in listed)
    custom = {p for p in MANIFESTS for d in documents(p) if (d["apiVersion"], d["kind"]) in SCHEMAS}
    assert listed == set(MANIFESTS) - custom, "custom kinds need their operators: applied alone"


def _probes_and_drain(pod: dict[str, Any], container: dict[str, Any]) -> None:
    env = _env(container)
    port = int(env.get("FOLDSERVE_PORT", "50051"))
    assert port in {p["containerPort"] for p in container["ports"]}
    readiness, liveness = container["readinessProbe"]["grpc"], container["livenessProbe"]["grpc"]
    assert readiness["port"] == liveness["port"] == port
    assert readiness.get("service", "") == ""  # NOT_SERVING as soon as the drain starts
    assert liveness["service"] == LIVENESS_SERVICE  # SERVING until the process exits
    drain = float(env["FOLDSERVE_DRAIN_DELAY_SECONDS"]) + float(env["FOLDSERVE_GRACE_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 2, "SIGKILL before the drain is done"
    known = serve_settings() | {"STORAGE_URI"}
    assert set(env) <= known, f"unknown settings: {set(env) - known}"
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert set(limits) == set(requests) == {"cpu", "memory"}


def test_deployment_probes_drain_and_model_volume():
    deployment = resources()["Deployment/foldserve"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    _probes_and_drain(pod, container)
    assert container["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert mount["readOnly"] and _env(container)["FOLDSERVE_MODEL"].startswith(mount["mountPath"])
    (volume,) = [v for v in pod["volumes"] if v["name"] == "models"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert f"PersistentVolumeClaim/{claim}" in resources()


def test_selectors_and_ports_agree():
    found = resources()
    labels = found["Deployment/foldserve"]["spec"]["template"]["metadata"]["labels"]
    selected = [
        found["Service/foldserve"]["spec"]["selector"],
        found["Service/foldserve-headless"]["spec"]["selector"],
        found["PodDisruptionBudget/foldserve"]["spec"]["selector"]["matchLabels"],
        found["Deployment/foldserve"]["spec"]["selector"]["matchLabels"],
    ]
    assert all(selector.items() <= labels.items() for selector in selected)
    service = found["Service/foldserve"]
    monitor = found["ServiceMonitor/foldserve"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= ports
    target = found["HorizontalPodAutoscaler/foldserve"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "foldserve")


def test_every_port_is_named_set_and_in_the_service():
    """gRPC, HTTP/REST and metrics: the port a setting gives the server is the container port of
    that name, and the Service forwards each by name."""
    (container,) = resources()["Deployment/foldserve"]["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"grpc": GRPC_PORT, "http": HTTP_PORT, "metrics": METRICS_PORT}
    assert int(env["FOLDSERVE_PORT"]) == named["grpc"]
    assert int(env["FOLDSERVE_HTTP_PORT"]) == named["http"]
    assert int(env["FOLDSERVE_METRICS_PORT"]) == named["metrics"]
    service = {p["name"]: p for p in resources()["Service/foldserve"]["spec"]["ports"]}
    assert {name: p["targetPort"] for name, p in service.items()} == {n: n for n in named}
    assert service["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert service["http"]["port"] == HTTP_PORT and service["http"]["appProtocol"] == "http"


# --- KServe --------------------------------------------------------------------------------

# ModelSpec's own fields; the rest of `model` is a Container merged over the runtime's.
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "storageUri", "runtimeVersion", "protocolVersion"}


def kserve_container(runtime: dict[str, Any], service: dict[str, Any]) -> dict[str, Any]:
    """The predictor container KServe builds (as its MergeServingRuntimeAndInferenceServiceSpecs
    and ReplacePlaceholders do, roughly): the runtime's kserve-container, the InferenceService's
    model container fields over it (env by name and ports by number, as a strategic merge patch;
    anything else replaced), then `{{.Name}}` and friends filled in from the InferenceService."""
    (merged,) = [c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container"]
    merged = copy.deepcopy(merged)
    model = service["spec"]["predictor"]["model"]
    for key, value in model.items():
        if key in KSERVE_MODEL_FIELDS:
            continue
        if key in ("env", "ports"):
            index = "name" if key == "env" else "containerPort"
            items = {item[index]: item for item in merged.get(key, [])}
            items.update({item[index]: item for item in value})
            merged[key] = list(items.values())
        else:
            merged[key] = value
    text = json.dumps(merged).replace("{{.Name}}", service["metadata"]["name"])
    text = text.replace("{{.Namespace}}", service["metadata"].get("namespace", "default"))
    assert "{{" not in text, f"a placeholder this test does not fill: {text}"
    return json.loads(text)


def test_kserve_runtime_serves_what_kserve_mounts_on_its_ports():
    runtime = resources()["ClusterServingRuntime/foldserve"]["spec"]
    assert runtime["protocolVersions"] == ["v2", "grpc-v2"]
    (onnx,) = [f for f in runtime["supportedModelFormats"] if f["name"] == "onnx"]
    assert onnx.get("autoSelect") is False, "named by InferenceServices, never picked for them"
    (container,) = runtime["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    assert container["image"] == "foldserve:latest"
    env = _env(container)
    assert env["FOLDSERVE_MODEL"] == "/mnt/models", "where KServe puts the storageUri's model"
    assert env["FOLDSERVE_MODEL_NAME"] == "{{.Name}}", "served under the InferenceService's name"
    first, *others = container["ports"]
    # KServe's predictor Service sends its port 80 to the first port: the V2 REST API, 8080.
    assert (first["containerPort"], int(env["FOLDSERVE_HTTP_PORT"])) == (8080, 8080)
    assert "h2c" not in first["name"] and "grpc" not in first["name"]
    (grpc,) = [p for p in others if p["name"] == "h2c"]  # routed as HTTP/2 by KServe
    assert grpc["containerPort"] == int(env["FOLDSERVE_PORT"])
    annotations = runtime["annotations"]
    assert annotations["prometheus.kserve.io/port"] == env["FOLDSERVE_METRICS_PORT"]
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["tmp"] == "/tmp" and {"name": "tmp", "emptyDir": {}} in runtime["volumes"]
    assert container["securityContext"]["runAsUser"] == 10001  # the image's user


def test_kserve_inference_service_names_the_runtime_and_drains():
    found = resources()
    service, runtime = found["InferenceService/foldserve"], found["ClusterServingRuntime/foldserve"]
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    supported = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in supported
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert "containers" not in predictor, "the runtime gives the container"
    # The model volume claim of models-pvc.yaml, a model repository directory in it.
    claim = model["storageUri"].removeprefix("pvc://").split("/")[0]
    assert f"PersistentVolumeClaim/{claim}" in found
    # Two ports (HTTP and gRPC): not Knative, which takes one.
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in (
        "RawDeployment",
        "Standard",
    )
    container = kserve_container(runtime, service)
    assert _env(container)["FOLDSERVE_MODEL_NAME"] == service["metadata"]["name"]
    assert container["ports"][0]["containerPort"] == int(_env(container)["FOLDSERVE_HTTP_PORT"])
    _probes_and_drain(predictor, container)
    assert container["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE
