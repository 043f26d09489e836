"""deploy/k8s/ validated offline: core kinds with kubernetes-validate (strict), the KServe and
Prometheus Operator kinds with the schemas of k8s_schemas.py, and the settings that must agree
across files (probes on the health service, the drain within the grace period, selectors, ports,
the model volume)."""

from __future__ import annotations

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
    broken["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8081"
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(broken)  # a core Container field, checked against the core schema
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


def test_kserve_predictor_is_foldserve_on_its_grpc_port():
    predictor = resources()["InferenceService/foldserve"]["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    (port,) = container["ports"]
    assert port["name"] == "h2c", "KServe routes HTTP/2 (gRPC) to a port named h2c"
    env = _env(container)
    assert port["containerPort"] == int(env["FOLDSERVE_PORT"])
    assert env["FOLDSERVE_MODEL"] == "/mnt/models" and env["STORAGE_URI"].startswith("pvc://")
    _probes_and_drain(predictor, container)
