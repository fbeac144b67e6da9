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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lpr_core.dvcgraph import Stage

RUNTIME_YAML = Path(__file__).with_name("runtime.yaml")
#: The project's stage graph (the repository root's ``dvc.yaml``).
DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"
ENCODER_STAGE = "train_encoder"
ENCODER_MODULE = "lpr_core.stages.train_encoder"
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


def uncached_outputs(dvc_yaml: str | Path = DVC_YAML) -> dict[str, tuple[str, ...]]:
    """Outputs (outs, metrics, plots) declared with ``cache: false``, per stage.

    Pods share data only through the DVC remote, and DVC pushes neither uncached outputs nor their
    run-cache entries: a stage listed here cannot be restored in a downstream pod, so every
    downstream pod would run it again. Keep pod-run stages' outputs cached.
    """
    import yaml

    doc = yaml.safe_load(Path(dvc_yaml).read_text()) or {}
    found: dict[str, tuple[str, ...]] = {}
    for name, spec in (doc.get("stages") or {}).items():
        paths = []
        for key in ("outs", "metrics", "plots"):
            for entry in spec.get(key) or []:
                if isinstance(entry, dict):
                    for path, options in entry.items():
                        if isinstance(options, dict) and options.get("cache") is False:
                            paths.append(str(path))
        if paths:
            found[name] = tuple(paths)
    return found


def command_script(command: str, restore: str | None = None) -> str:
    """The script of a non-stage step (e.g. the registry gate): restore a stage's outputs, run ``command``.

    Args:
        command: a shell command line, e.g. ``lpr promote --candidate-from data/evaluate``.
        restore: a stage whose outputs the command reads; restored like :func:`stage_script` does
            (from the DVC remote's run cache), never recomputed when the upstream pods pushed it.
    """
    import shlex

    lines = ["set -euo pipefail"]
    if restore:
        lines.append(f"dvc repro --pull {shlex.quote(restore)}")
    lines.append(command)
    return "\n".join(lines) + "\n"


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


def stage_pod_template(stage: str, rt: Runtime, env: Mapping[str, str] | None = None,
                       command: list[str] | None = None) -> dict[str, Any]:
    """The ``v1/Pod`` of ``stage`` without anything that belongs to one run.

    This is the template the Airflow ``KubernetesPodOperator`` starts from (``pod_template_dict``):
    the operator adds the run's name suffix, labels and ``LPR_PIPELINE_RUN_ID`` itself.

    Args:
        stage: the stage name (``dvc.yaml``); its resources come from ``runtime.yaml``.
        rt: the parsed runtime.
        env: extra environment variables of the container.
        command: the container command (default: :func:`stage_script` under ``bash -c``).

    Returns:
        A Pod manifest as a plain dict.
    """
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": k8s_name("lpr", stage), "namespace": rt.namespace,
                     "labels": {"app.kubernetes.io/name": "lpr-pipeline", "lpr/stage": k8s_name(stage)}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [stage_container(stage, rt, env, command)],
            **_pod_spec_extras(stage, rt),
        },
    }


def stage_pod(stage: str, rt: Runtime, run_id: str = "manual", env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``v1/Pod`` manifest that runs ``stage`` once."""
    pod = stage_pod_template(stage, rt, {"LPR_PIPELINE_RUN_ID": run_id, **(env or {})})
    pod["metadata"]["name"] = k8s_name("lpr", stage, run_id)
    pod["metadata"]["labels"]["lpr/run"] = k8s_name(run_id)
    return pod


def stage_arguments(stage: Stage, module: str) -> list[str]:
    """The arguments of ``stage``'s command after ``python -m <module>``, as ``dvc.yaml`` writes them.

    Raises:
        ValueError: the command is not a single ``python -m <module> ...`` call, or uses ``${...}``
            templating (the arguments must be literal to be reused by another launcher).
    """
    import shlex

    if "${" in stage.cmd:
        raise ValueError(f"dvc.yaml: stage {stage.name!r}: cmd uses ${{...}} templating, which a TrainJob "
                         f"cannot resolve; write the arguments literally: {stage.cmd!r}")
    words = shlex.split(stage.cmd)
    if (len(words) < 3 or not _is_python(words[0]) or words[1:3] != ["-m", module]
            or any(w in ("&&", "||", ";", "|") for w in words)):
        raise ValueError(f"dvc.yaml: stage {stage.name!r}: expected cmd 'python -m {module} [ARGS...]', "
                         f"got {stage.cmd!r}")
    return words[3:]


def _is_python(word: str) -> bool:
    name = word.rsplit("/", 1)[-1]
    return re.fullmatch(r"python(3(\.\d+)?)?", name) is not None


def torchrun_script(stage: Stage, module: str, nproc_per_node: int) -> str:
    """The script every TrainJob node runs: pull inputs, ``torchrun`` the stage, rank 0 records and pushes.

    The rendezvous comes from the environment Kubeflow Trainer sets on every node: ``PET_NNODES``,
    ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``. Every
    node pulls the stage's inputs (the outputs of its upstream stages, restored from the DVC
    remote's run cache, as in :func:`stage_script`); after training only node 0 runs
    ``dvc commit`` (which records the outputs in the cache, ``dvc.lock`` and the run cache) and
    pushes them with the run-cache entry, so the next stage's pod can restore them.

    Args:
        stage: the stage (from ``dvc.yaml``); its cmd must be ``python -m <module> [ARGS...]``.
        module: the entry point module.
        nproc_per_node: processes per node when ``PET_NPROC_PER_NODE`` is not set.
    """
    import shlex

    launch = [
        "torchrun", '--nnodes="$PET_NNODES"', f'--nproc-per-node="${{PET_NPROC_PER_NODE:-{int(nproc_per_node)}}}"',
        '--node-rank="$PET_NODE_RANK"', '--master-addr="$PET_MASTER_ADDR"', '--master-port="$PET_MASTER_PORT"',
        "-m", module, *(shlex.quote(a) for a in stage_arguments(stage, module)),
    ]
    name = shlex.quote(stage.name)
    lines = [
        "set -euo pipefail",
        ': "${PET_NNODES:?is set by the Kubeflow Trainer torch runtime}" "${PET_NODE_RANK:?}" '
        '"${PET_MASTER_ADDR:?}" "${PET_MASTER_PORT:?}"',
    ]
    if stage.upstream:
        # The image's dvc.lock predates this pipeline run: the upstream outputs are found through the
        # run cache the upstream pods pushed (a restore, not a recomputation).
        lines.append("dvc repro --pull " + " ".join(shlex.quote(u) for u in stage.upstream))
    lines += [
        " ".join(launch),
        'if [ "$PET_NODE_RANK" = "0" ]; then',
        f"  dvc commit --force {name}",
        f"  dvc push --run-cache {name}",
        "fi",
    ]
    return "\n".join(lines) + "\n"


def encoder_trainjob(rt: Runtime, run_id: str = "manual", num_nodes: int | None = None,
                     gpus_per_node: int | None = None, stage: Stage | None = None,
                     dvc_yaml: str | Path = DVC_YAML) -> dict[str, Any]:
    """A Kubeflow Trainer v2 ``TrainJob`` running the encoder stage with torchrun over N GPU nodes.

    The runtime (a ``ClusterTrainingRuntime`` such as ``torch-distributed``) starts one pod per node
    and sets the ``PET_*`` rendezvous variables; each node runs :func:`torchrun_script` on the same
    entry point and arguments as ``dvc.yaml``'s ``train_encoder`` stage.

    Args:
        rt: the parsed runtime.
        run_id: the pipeline run id (``LPR_PIPELINE_RUN_ID`` of every MLflow run).
        num_nodes: nodes (default ``trainjob.num_nodes``).
        gpus_per_node: GPUs and torchrun processes per node (default ``trainjob.gpus_per_node``).
        stage: the ``train_encoder`` stage; read from ``dvc_yaml`` when not given.
        dvc_yaml: the stage graph to read the stage from.
    """
    if stage is None:
        from lpr_core.dvcgraph import load_stages

        by_name = {s.name: s for s in load_stages(dvc_yaml)}
        if ENCODER_STAGE not in by_name:
            raise ValueError(f"{dvc_yaml}: no stage {ENCODER_STAGE!r}")
        stage = by_name[ENCODER_STAGE]
    tj = rt.trainjob
    nodes = int(num_nodes or tj.get("num_nodes", 1))
    gpus = int(gpus_per_node or tj.get("gpus_per_node", 1))
    script = torchrun_script(stage, ENCODER_MODULE, gpus)
    container = stage_container(stage.name, rt, {"LPR_PIPELINE_RUN_ID": run_id}, command=["bash", "-c", script])
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
                "command": container["command"],
                "numNodes": nodes,
                "numProcPerNode": gpus,
                "resourcesPerNode": res,
                "env": container["env"],
            },
        },
    }
