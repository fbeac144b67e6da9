"""The pod a step of a compiled KFP pipeline runs as, for comparing it with the other orchestrators' pods."""

from pathlib import Path

import yaml


def read_compiled(path: str | Path) -> dict:
    """A compiled pipeline YAML: ``pipeline`` (the spec) and ``platform`` (its Kubernetes executors)."""
    pipeline, platform = yaml.safe_load_all(Path(path).read_text())
    return {"pipeline": pipeline, "platform": platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]}


#: What the KFP backend adds to every step's container and pod (kubeflow/pipelines#12782): the compiled
#: spec cannot say it, the backend enforces it.
KFP_BACKEND_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                  "seccompProfile": {"type": "RuntimeDefault"}}
KFP_BACKEND_POD_SECURITY = {"seccompProfile": {"type": "RuntimeDefault"}}


def step_pod(compiled: dict, step: str) -> dict:
    """The ``v1/Pod`` a KFP step runs as: the compiled container and platform spec, the backend's defaults."""
    key = f"exec-lpr-{step.replace('_', '-')}"
    container, platform = compiled["pipeline"]["deploymentSpec"]["executors"][key]["container"], compiled["platform"][key]
    env = [dict(e) for e in container.get("env", [])]
    for secret in platform.get("secretAsEnv", []):
        env += [{"name": m["envVar"], "valueFrom": {"secretKeyRef": {"name": secret["secretName"], "key": m["secretKey"],
                                                                     "optional": secret.get("optional", False)}}}
                for m in secret["keyToEnv"]]
    sc = platform.get("securityContext", {})
    mounts = platform.get("emptyDirMounts", [])
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": key},
        "spec": {
            "securityContext": dict(KFP_BACKEND_POD_SECURITY),
            "nodeSelector": platform.get("nodeSelector", {}).get("labels", {}),
            "tolerations": platform.get("tolerations", []),
            "volumes": [{"name": m["volumeName"], "emptyDir": {k: m[k] for k in ("medium", "sizeLimit") if k in m}}
                        for m in mounts],
            "containers": [{
                "name": "main", "image": container["image"], "command": container["command"],
                "args": container.get("args", []), "env": env,
                "securityContext": {**KFP_BACKEND_CONTAINER_SECURITY, "runAsUser": int(sc["runAsUser"]),
                                    "runAsGroup": int(sc["runAsGroup"]), "runAsNonRoot": sc["runAsNonRoot"]},
                "volumeMounts": [{"name": m["volumeName"], "mountPath": m["mountPath"]} for m in mounts],
            }],
        },
    }
