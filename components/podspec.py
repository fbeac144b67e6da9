"""Render the Kubernetes objects of the pipeline from ``components/runtime.yaml``.

One function, :func:`stage_container`, builds the container of a stage (image, command,
resources, environment); the pod of the Airflow ``KubernetesPodOperator``, the Kubeflow Trainer
``TrainJob`` and the KFP components all take it from there.

In a pod a stage runs as ``dvc repro --pull <stage>`` followed by ``dvc push --run-cache <stage>``:
pods share data only through the DVC remote. Upstream stages are restored from the run cache
(their outputs pulled, not recomputed); only the stage itself runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNTIME_YAML = Path(__file__).with_name("runtime.yaml")
_DNS1123 = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class StageResources:
    """CPU, memory and GPUs of one stage's container."""

    cpu: str
    memory: str
    gpus: int = 0


@dataclass(frozen=True)
class Runtime:
    """The parsed ``runtime.yaml``."""

    image: str
    namespace: str
    service_account: str
    workdir: str
    run_as_user: int
    env: Mapping[str, str]
    env_from_secret: str | None
    shm_size: str
    startup_timeout_seconds: int
    image_pull_policy: str
    defaults: StageResources
    stages: Mapping[str, StageResources]
    gpu_resource: str
    gpu_node_selector: Mapping[str, str]
    gpu_tolerations: tuple[Mapping[str, Any], ...]
    trainjob: Mapping[str, Any] = field(default_factory=dict)

    def resources(self, stage: str) -> StageResources:
        """Resources of ``stage`` (the defaults when it has no entry)."""
        return self.stages.get(stage, self.defaults)


def load_runtime(path: str | Path = RUNTIME_YAML, overrides: Mapping[str, Any] | None = None) -> Runtime:
    """Parse ``runtime.yaml`` (plus optional top-level overrides, e.g. ``{"image": ...}``)."""
    import yaml

    raw = yaml.safe_load(Path(path).read_text()) or {}
    raw.update(overrides or {})
    d = raw.get("defaults", {})
    defaults = StageResources(str(d.get("cpu", "1")), str(d.get("memory", "4Gi")), int(d.get("gpus", 0)))
    stages = {
        name: StageResources(str(s.get("cpu", defaults.cpu)), str(s.get("memory", defaults.memory)),
                             int(s.get("gpus", defaults.gpus)))
        for name, s in (raw.get("stages") or {}).items()
    }
    gpu = raw.get("gpu") or {}
    return Runtime(
        image=raw["image"],
        namespace=raw.get("namespace", "default"),
        service_account=raw.get("service_account", "default"),
        workdir=raw.get("workdir", "/opt/lpr"),
        run_as_user=int(raw.get("run_as_user", 1000)),
        env={k: str(v) for k, v in (raw.get("env") or {}).items()},
        env_from_secret=raw.get("env_from_secret"),
        shm_size=str(raw.get("shm_size", "1Gi")),
        startup_timeout_seconds=int(raw.get("startup_timeout_seconds", 300)),
        image_pull_policy=raw.get("image_pull_policy", "IfNotPresent"),
        defaults=defaults,
        stages=stages,
        gpu_resource=gpu.get("resource", "nvidia.com/gpu"),
        gpu_node_selector={k: str(v) for k, v in (gpu.get("node_selector") or {}).items()},
        gpu_tolerations=tuple(gpu.get("tolerations") or ()),
        trainjob=raw.get("trainjob") or {},
    )


def k8s_name(*parts: str, max_len: int = 63) -> str:
    """A DNS-1123 label built from ``parts`` (lower case, ``-`` separated, at most 63 characters)."""
    name = _DNS1123.sub("-", "-".join(parts).lower()).strip("-")
    return name[:max_len].rstrip("-") or "lpr"


def stage_script(stage: str) -> str:
    """The shell script a stage's container runs: restore upstream, run the stage, push its outputs."""
    return (
        "set -euo pipefail\n"
        f"dvc repro --pull {stage}\n"
        f"dvc push --run-cache {stage}\n"
    )


def stage_container(stage: str, rt: Runtime, env: Mapping[str, str] | None = None,
                    command: list[str] | None = None) -> dict[str, Any]:
    """The container of ``stage`` as a Kubernetes ``V1Container`` dict."""
    res = rt.resources(stage)
    limits: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    if res.gpus:
        limits[rt.gpu_resource] = str(res.gpus)
    container: dict[str, Any] = {
        "name": k8s_name(stage),
        "image": rt.image,
        "imagePullPolicy": rt.image_pull_policy,
        "workingDir": rt.workdir,
        "command": command or ["bash", "-c", stage_script(stage)],
        "env": [{"name": k, "value": v} for k, v in {**rt.env, **(env or {})}.items()],
        "resources": {"requests": {"cpu": res.cpu, "memory": res.memory}, "limits": limits},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": rt.run_as_user,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if rt.env_from_secret:
        container["envFrom"] = [{"secretRef": {"name": rt.env_from_secret, "optional": True}}]
    return container


def _pod_spec_extras(stage: str, rt: Runtime) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": rt.service_account,
        "securityContext": {"runAsNonRoot": True, "runAsUser": rt.run_as_user, "fsGroup": rt.run_as_user},
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": rt.shm_size}}],
    }
    if rt.resources(stage).gpus:
        spec["nodeSelector"] = dict(rt.gpu_node_selector)
        spec["tolerations"] = [dict(t) for t in rt.gpu_tolerations]
    return spec


def stage_pod(stage: str, rt: Runtime, run_id: str = "manual", env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``v1/Pod`` manifest that runs ``stage`` once."""
    labels = {"app.kubernetes.io/name": "lpr-pipeline", "lpr/stage": k8s_name(stage), "lpr/run": k8s_name(run_id)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": k8s_name("lpr", stage, run_id), "namespace": rt.namespace, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "containers": [stage_container(stage, rt, {"LPR_PIPELINE_RUN_ID": run_id, **(env or {})})],
            **_pod_spec_extras(stage, rt),
        },
    }


def encoder_trainjob(rt: Runtime, run_id: str = "manual", num_nodes: int | None = None,
                     gpus_per_node: int | None = None) -> dict[str, Any]:
    """A Kubeflow Trainer v2 ``TrainJob`` running the encoder stage with torchrun over N GPU nodes.

    The runtime (a ``ClusterTrainingRuntime`` such as ``torch-distributed``) launches ``torchrun``
    with the rendezvous settings; the command is the same entry point as ``dvc repro`` uses.
    """
    tj = rt.trainjob
    nodes = int(num_nodes or tj.get("num_nodes", 1))
    gpus = int(gpus_per_node or tj.get("gpus_per_node", 1))
    container = stage_container("train_encoder", rt, {"LPR_PIPELINE_RUN_ID": run_id})
    res = container["resources"]
    res["limits"][rt.gpu_resource] = str(gpus)
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": k8s_name("lpr-encoder", run_id), "namespace": rt.namespace,
                     "labels": {"app.kubernetes.io/name": "lpr-pipeline", "lpr/run": k8s_name(run_id)}},
        "spec": {
            "runtimeRef": {"name": tj.get("runtime", "torch-distributed"), "kind": "ClusterTrainingRuntime",
                           "apiGroup": "trainer.kubeflow.org"},
            "trainer": {
                "image": rt.image,
                "command": ["torchrun"],
                "args": ["-m", "lpr_core.stages.train_encoder"],
                "numNodes": nodes,
                "numProcPerNode": gpus,
                "resourcesPerNode": res,
                "env": container["env"],
            },
        },
    }
