"""The manifests ``docs/kubernetes.md`` asks users to apply are valid, restricted and keep credentials out of args."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from components import pss

DOC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"
K8S_VERSION = "1.32.0"
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN|BACKEND_STORE_URI|ACCESS_KEY", re.I)
#: API groups of Kubernetes itself (custom resources, e.g. a SparkApplication, have their own schemas).
CORE_GROUPS = {"", "apps", "batch", "rbac.authorization.k8s.io", "networking.k8s.io", "policy"}


def manifests() -> list[dict]:
    """Every core Kubernetes object of the ```yaml blocks of the page."""
    found = []
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S):
        for doc in yaml.safe_load_all(block):
            if (isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc
                    and str(doc["apiVersion"]).rpartition("/")[0] in CORE_GROUPS):
                found.append(doc)
    return found


def _pod_templates(obj: dict) -> list[dict]:
    if obj["kind"] in ("Deployment", "StatefulSet"):
        template = obj["spec"]["template"]
        return [{"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata", {}), "spec": template["spec"]}]
    return []


def test_the_page_has_the_manifests_it_talks_about():
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in manifests())
    assert ("Deployment", "mlflow") in kinds and ("StatefulSet", "postgres") in kinds
    assert ("ServiceAccount", "lpr-pipeline") in kinds and ("ConfigMap", "mlflow-proxy") in kinds


@pytest.mark.parametrize("obj", manifests(), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_manifest_is_valid_and_its_pods_are_restricted(obj):
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    for pod in _pod_templates(obj):
        assert pss.restricted_violations(pod) == []
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]
            for word in [*c.get("command", []), *c.get("args", [])]:
                assert not re.search(r"password|://[^/\s]*:[^/\s]*@", str(word), re.I), (c["name"], word)
            for env in c.get("env", []):
                if SECRET_NAMES.search(env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), (c["name"], env["name"])


def test_the_mlflow_server_authenticates_and_keeps_its_database_behind_a_secret():
    (deployment,) = [m for m in manifests() if m["kind"] == "Deployment" and m["metadata"]["name"] == "mlflow"]
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    mlflow = containers["mlflow"]
    assert mlflow["command"][:2] == ["mlflow", "server"]
    assert mlflow["command"][mlflow["command"].index("--host") + 1] == "127.0.0.1"  # reachable through the proxy only
    store = next(e for e in mlflow["env"] if e["name"] == "MLFLOW_BACKEND_STORE_URI")
    assert store["valueFrom"]["secretKeyRef"]["name"] == "lpr-mlflow-server"
    (config,) = [m for m in manifests() if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "mlflow-proxy"]
    conf = config["data"]["default.conf"]
    assert "auth_basic \"MLflow\"" in conf and "auth_basic_user_file /etc/nginx/htpasswd/htpasswd" in conf
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["htpasswd"]["secret"]["secretName"] == "lpr-mlflow-htpasswd"
    (service,) = [m for m in manifests() if m["kind"] == "Service" and m["metadata"]["name"] == "mlflow"]
    assert service["spec"]["ports"][0]["targetPort"] == containers["proxy"]["ports"][0]["containerPort"]
