"""Render the Kubernetes objects of the pipeline from ``components/runtime.yaml``.

One function, :func:`stage_container`, builds the container of a stage (image, command,
resources, environment, security context, mounts); the pod of the Airflow
``KubernetesPodOperator``, the Kubeflow Trainer ``TrainJob`` and the KFP steps all take it from
there, so they run the same command in the same environment.

Every container runs ``python -m components.pod ...`` (:mod:`components.pod`) in its working
directory, an ``emptyDir`` into which it copies the image's checkout: the root file system is
read-only. Pods share data only through the DVC remote and the ``dvc.lock`` exchange
(``$LPR_RUNS_URL``); upstream stages are restored from there, never recomputed.

Every pod passes the Pod Security Standard "restricted" (:mod:`components.pss` checks it): non-root
user, ``RuntimeDefault`` seccomp, no privilege escalation, every capability dropped, a read-only
root file system, no service-account token.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from components.orchestration import RUN_ID_ENV, TRIGGER_ENV
from lpr_core.dvcgraph import load_stages

if TYPE_CHECKING:
    from lpr_core.dvcgraph import Stage

RUNTIME_YAML = Path(__file__).with_name("runtime.yaml")
#: The project's stage graph (the repository root's ``dvc.yaml``).
DVC_YAML = Path(__file__).resolve().parents[1] / "dvc.yaml"
ENCODER_STAGE = "train_encoder"
ENCODER_MODULE = "lpr_core.stages.train_encoder"
#: The module every container runs (the pod side of the pipeline).
POD_MODULE = "components.pod"
#: Who owns this project's entry in a TrainJob's ``runtimePatches``.
PATCH_MANAGER = "lpr-mlops.io/podspec"
#: The torch runtime's replicated job and container (Kubeflow Trainer's ``torch-distributed``).
TRAINER_NODE = "node"
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
    home: str
    run_as_user: int
    run_as_group: int
    env: Mapping[str, str]
    secret_env: Mapping[str, tuple[str, ...]]
    shm_size: str
    tmp_size: str
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
    """Parse ``runtime.yaml`` (plus optional top-level overrides, e.g. ``{"image": ...}``).

    Raises:
        ValueError: a secret's keys are not a list of variable names (the message names the file).
    """
    raw = yaml.safe_load(Path(path).read_text()) or {}
    raw.update(overrides or {})
    d = raw.get("defaults", {})
    defaults = StageResources(str(d.get("cpu", "1")), str(d.get("memory", "4Gi")), int(d.get("gpus", 0)))
    stages = {
        name: StageResources(str(s.get("cpu", defaults.cpu)), str(s.get("memory", defaults.memory)),
                             int(s.get("gpus", defaults.gpus)))
        for name, s in (raw.get("stages") or {}).items()
    }
    secret_env = {}
    for secret, keys in (raw.get("secret_env") or {}).items():
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"{path}: secret_env.{secret} must be a list of variable names, got {keys!r}")
        secret_env[str(secret)] = tuple(keys)
    gpu = raw.get("gpu") or {}
    run_as_user = int(raw.get("run_as_user", 1000))
    return Runtime(
        image=raw["image"],
        namespace=raw.get("namespace", "default"),
        service_account=raw.get("service_account", "default"),
        workdir=raw.get("workdir", "/workspace"),
        home=raw.get("home", "/home/lpr"),
        run_as_user=run_as_user,
        run_as_group=int(raw.get("run_as_group", run_as_user)),
        env={k: str(v) for k, v in (raw.get("env") or {}).items()},
        secret_env=secret_env,
        shm_size=str(raw.get("shm_size", "1Gi")),
        tmp_size=str(raw.get("tmp_size", "10Gi")),
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


# --- commands --------------------------------------------------------------------------------------

def stage_command(stage: str) -> list[str]:
    """The container command of a stage's pod: :mod:`components.pod` ``run <stage>``.

    It restores the upstream outputs the run recorded, runs the stage once, pushes its outputs and
    publishes its ``dvc.lock`` entry. The run's id and trigger params follow as arguments
    (:func:`run_arguments`) or come from the environment.
    """
    return ["python", "-m", POD_MODULE, "run", stage]


def exec_command(command: str, restore: str | None = None) -> list[str]:
    """The container command of a non-stage step (e.g. the registry gate): a shell ``command``.

    Args:
        command: a shell command line, e.g. ``lpr promote --candidate-from data/evaluate``.
        restore: a stage whose outputs the command reads: the run's complete ``dvc.lock`` is
            assembled and that stage's outputs pulled first, never recomputed.
    """
    return ["python", "-m", POD_MODULE, "exec", *(["--restore", restore] if restore else []), "--command", command]


def run_arguments(run_id: str, params_overrides: str, data_url: str) -> list[str]:
    """The container arguments carrying one pipeline run: its id and trigger params (strings, may be templates)."""
    return ["--run-id", run_id, "--params-overrides", params_overrides, "--data-url", data_url]


# --- containers and pods ---------------------------------------------------------------------------

def container_security_context(rt: Runtime) -> dict[str, Any]:
    """The container ``securityContext`` of every pipeline container (Pod Security Standard "restricted")."""
    return {
        "runAsNonRoot": True,
        "runAsUser": rt.run_as_user,
        "runAsGroup": rt.run_as_group,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context(rt: Runtime) -> dict[str, Any]:
    """The pod ``securityContext`` of every pipeline pod."""
    return {
        "runAsNonRoot": True,
        "runAsUser": rt.run_as_user,
        "runAsGroup": rt.run_as_group,
        "fsGroup": rt.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def volumes(rt: Runtime) -> list[dict[str, Any]]:
    """The pod's writable places, all ``emptyDir``: the workspace, ``/tmp``, ``HOME`` and ``/dev/shm``."""
    return [
        {"name": "workspace", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {"sizeLimit": rt.tmp_size}},
        {"name": "home", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": rt.shm_size}},
    ]


def volume_mounts(rt: Runtime) -> list[dict[str, Any]]:
    """Where :func:`volumes` are mounted: the working directory, ``/tmp``, ``HOME``, ``/dev/shm``."""
    return [
        {"name": "workspace", "mountPath": rt.workdir},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
        {"name": "home", "mountPath": rt.home},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]


def container_env(rt: Runtime, env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The environment of every container: ``runtime.yaml``'s ``env``, then its secrets key by key.

    Secrets come in as ``secretKeyRef`` variables (optional: a missing secret or key leaves the
    variable unset), never as values: the same form works in pods, KFP steps and TrainJob nodes
    (neither of the last two can take ``envFrom``).
    """
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in {**rt.env, **(env or {})}.items()]
    for secret, keys in rt.secret_env.items():
        out += [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
                for key in keys]
    return out


def stage_container(stage: str, rt: Runtime, env: Mapping[str, str] | None = None,
                    command: list[str] | None = None, args: Sequence[str] | None = None) -> dict[str, Any]:
    """The container of ``stage`` as a Kubernetes ``V1Container`` dict.

    Args:
        stage: the stage (or step) name; its resources come from ``runtime.yaml``.
        rt: the parsed runtime.
        env: extra environment variables.
        command: the container command (default :func:`stage_command`).
        args: the container arguments (e.g. :func:`run_arguments`).
    """
    res = rt.resources(stage)
    limits: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    if res.gpus:
        limits[rt.gpu_resource] = str(res.gpus)
    container: dict[str, Any] = {
        "name": k8s_name(stage),
        "image": rt.image,
        "imagePullPolicy": rt.image_pull_policy,
        "workingDir": rt.workdir,
        "command": command or stage_command(stage),
        "env": container_env(rt, env),
        "resources": {"requests": {"cpu": res.cpu, "memory": res.memory}, "limits": limits},
        "securityContext": container_security_context(rt),
        "volumeMounts": volume_mounts(rt),
    }
    if args:
        container["args"] = list(args)
    return container


def _pod_spec_extras(stage: str, rt: Runtime) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": rt.service_account,
        "automountServiceAccountToken": False,  # the stages never call the Kubernetes API
        "securityContext": pod_security_context(rt),
        "volumes": volumes(rt),
    }
    if rt.resources(stage).gpus:
        spec["nodeSelector"] = dict(rt.gpu_node_selector)
        spec["tolerations"] = [dict(t) for t in rt.gpu_tolerations]
    return spec


def stage_pod_template(stage: str, rt: Runtime, env: Mapping[str, str] | None = None,
                       command: list[str] | None = None) -> dict[str, Any]:
    """The ``v1/Pod`` of ``stage`` without anything that belongs to one run.

    This is the template the Airflow ``KubernetesPodOperator`` starts from (``pod_template_dict``):
    the operator adds the run's name suffix, labels and arguments (the run id and trigger params).

    Args:
        stage: the stage name (``dvc.yaml``); its resources come from ``runtime.yaml``.
        rt: the parsed runtime.
        env: extra environment variables of the container.
        command: the container command (default :func:`stage_command`).

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


def stage_pod(stage: str, rt: Runtime, run_id: str = "manual", params_overrides: str = "{}",
              data_url: str = "") -> dict[str, Any]:
    """The ``v1/Pod`` manifest that runs ``stage`` once in pipeline run ``run_id``."""
    pod = stage_pod_template(stage, rt)
    pod["metadata"]["name"] = k8s_name("lpr", stage, run_id)
    pod["metadata"]["labels"]["lpr/run"] = k8s_name(run_id)
    pod["spec"]["containers"][0]["args"] = run_arguments(run_id, params_overrides, data_url)
    return pod


def service_account(rt: Runtime) -> dict[str, Any]:
    """The pipeline's ``ServiceAccount``: no API token is mounted into its pods (none calls the API)."""
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": rt.service_account, "namespace": rt.namespace},
            "automountServiceAccountToken": False}


def uncached_outputs(dvc_yaml: str | Path = DVC_YAML) -> dict[str, tuple[str, ...]]:
    """Outputs (outs, metrics, plots) declared with ``cache: false``, per stage.

    DVC pushes no uncached output: a downstream pod could not pull it, so a stage listed here
    cannot hand its outputs on. Keep pod-run stages' outputs cached.
    """
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


# --- the encoder TrainJob --------------------------------------------------------------------------

def stage_arguments(stage: Stage, module: str) -> list[str]:
    """The arguments of ``stage``'s command after ``python -m <module>``, as ``dvc.yaml`` writes them.

    Raises:
        ValueError: the command is not a single ``python -m <module> ...`` call, or uses ``${...}``
            templating (the arguments must be literal to be reused by another launcher).
    """
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
    """The script every TrainJob node runs: restore inputs, ``torchrun`` the stage, node 0 records it.

    The rendezvous comes from the environment Kubeflow Trainer sets on every node: ``PET_NNODES``,
    ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``. Every
    node runs ``python -m components.pod prepare`` (its workspace, the run's params overrides, the
    stage's inputs restored from the run's ``dvc.lock`` entries and the DVC remote); after training
    only node 0 runs ``python -m components.pod record`` (``dvc commit``, which records the outputs
    in the cache, ``dvc.lock`` and the run cache; ``dvc push --run-cache``; the stage's entry
    published for the run), so the next stage's pod restores it.

    Args:
        stage: the stage (from ``dvc.yaml``); its cmd must be ``python -m <module> [ARGS...]``.
        module: the entry point module.
        nproc_per_node: processes per node when ``PET_NPROC_PER_NODE`` is not set.
    """
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
        f"python -m {POD_MODULE} prepare {name}",
        " ".join(launch),
        'if [ "$PET_NODE_RANK" = "0" ]; then',
        f"  python -m {POD_MODULE} record {name}",
        "fi",
    ]
    return "\n".join(lines) + "\n"


def trainjob_patch(rt: Runtime, stage: str = ENCODER_STAGE) -> dict[str, Any]:
    """This project's ``runtimePatches`` entry: what a TrainJob's ``trainer`` cannot say.

    Through the Trainer API's own override mechanism, the node pods of the runtime get the same
    pod-level settings as a stage pod: service account, security contexts, the writable
    ``emptyDir`` volumes and their mounts, and the GPU node selector and tolerations.
    """
    spec: dict[str, Any] = {
        "serviceAccountName": rt.service_account,
        "securityContext": pod_security_context(rt),
        "volumes": volumes(rt),
        "containers": [{"name": TRAINER_NODE, "securityContext": container_security_context(rt),
                        "volumeMounts": volume_mounts(rt)}],
    }
    if rt.gpu_node_selector:
        spec["nodeSelector"] = dict(rt.gpu_node_selector)
    if rt.gpu_tolerations:
        spec["tolerations"] = [dict(t) for t in rt.gpu_tolerations]
    pod_template = {"metadata": {"labels": {"app.kubernetes.io/name": "lpr-pipeline", "lpr/stage": k8s_name(stage)}},
                    "spec": spec}
    return {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
            {"name": TRAINER_NODE, "template": {"spec": {"template": pod_template}}},
        ]}}},
    }


def encoder_trainjob(rt: Runtime, run_id: str = "manual", num_nodes: int | None = None,
                     gpus_per_node: int | None = None, stage: Stage | None = None,
                     dvc_yaml: str | Path = DVC_YAML, params_overrides: str = "{}",
                     data_url: str = "", module: str = ENCODER_MODULE) -> dict[str, Any]:
    """A Kubeflow Trainer v2 ``TrainJob`` running the encoder stage with torchrun over N GPU nodes.

    The runtime (a ``ClusterTrainingRuntime`` such as ``torch-distributed``) starts one pod per node
    and sets the ``PET_*`` rendezvous variables; each node runs :func:`torchrun_script` on the same
    entry point and arguments as ``dvc.yaml``'s ``train_encoder`` stage, in the environment of a
    stage pod. Pod-level settings come through ``runtimePatches`` (:func:`trainjob_patch`).

    Args:
        rt: the parsed runtime.
        run_id: the pipeline run whose upstream stages the job reads (``LPR_PIPELINE_RUN_ID``).
        num_nodes: nodes (default ``trainjob.num_nodes``).
        gpus_per_node: GPUs and torchrun processes per node (default ``trainjob.gpus_per_node``).
        stage: the ``train_encoder`` stage; read from ``dvc_yaml`` when not given.
        dvc_yaml: the stage graph to read the stage from.
        params_overrides: the run's params overrides (a JSON object).
        data_url: the run's data URL.
        module: the stage's entry point module (``python -m <module>`` in its cmd).
    """
    if stage is None:
        by_name = {s.name: s for s in load_stages(dvc_yaml)}
        if ENCODER_STAGE not in by_name:
            raise ValueError(f"{dvc_yaml}: no stage {ENCODER_STAGE!r}")
        stage = by_name[ENCODER_STAGE]
    tj = rt.trainjob
    nodes = int(num_nodes or tj.get("num_nodes", 1))
    gpus = int(gpus_per_node or tj.get("gpus_per_node", 1))
    run_env = {RUN_ID_ENV: run_id, TRIGGER_ENV["params_overrides"]: params_overrides,
               TRIGGER_ENV["data_url"]: data_url}
    container = stage_container(stage.name, rt, run_env,
                                command=["bash", "-c", torchrun_script(stage, module, gpus)])
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
            "runtimePatches": [trainjob_patch(rt, stage.name)],
        },
    }


#: The node pod of Kubeflow Trainer's ``torch-distributed`` runtime before any TrainJob is applied
#: to it (its container has no working directory: the image's ``WORKDIR`` applies).
TORCH_RUNTIME_NODE_POD: dict[str, Any] = {
    "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
    "spec": {"containers": [{"name": TRAINER_NODE, "image": "pytorch/pytorch"}]},
}


def trainjob_node_pod(trainjob: Mapping[str, Any], node_rank: int = 0, master_addr: str = "127.0.0.1",
                      master_port: int = 29400,
                      runtime_pod: Mapping[str, Any] = TORCH_RUNTIME_NODE_POD) -> dict[str, Any]:
    """The ``v1/Pod`` Kubeflow Trainer makes of one node of ``trainjob`` (for checks and rehearsals).

    Mirrors what the Trainer controller and its admission webhook do with a torch runtime: the
    ``trainer`` fields (image, command, env, resources) go into the runtime's ``node`` container,
    the ``PET_*`` rendezvous variables are added, and each ``runtimePatches`` entry is merged in
    (maps merged, lists of named items merged by name, other lists replaced).

    Args:
        trainjob: a rendered TrainJob (:func:`encoder_trainjob`).
        node_rank: the node's rank (``PET_NODE_RANK``).
        master_addr: the address of node 0 (``PET_MASTER_ADDR``).
        master_port: the rendezvous port (``PET_MASTER_PORT``).
        runtime_pod: the runtime's node pod template.
    """
    pod = copy.deepcopy(dict(runtime_pod))
    trainer = trainjob["spec"]["trainer"]
    (node,) = [c for c in pod["spec"]["containers"] if c["name"] == TRAINER_NODE]
    node.update({"image": trainer["image"], "command": list(trainer["command"]),
                 "resources": copy.deepcopy(trainer["resourcesPerNode"])})
    node["env"] = [*copy.deepcopy(trainer.get("env", [])), *(
        {"name": k, "value": str(v)} for k, v in (
            ("PET_NNODES", trainer["numNodes"]), ("PET_NPROC_PER_NODE", trainer["numProcPerNode"]),
            ("PET_NODE_RANK", node_rank), ("PET_MASTER_ADDR", master_addr), ("PET_MASTER_PORT", master_port)))]
    for patch in trainjob["spec"].get("runtimePatches", []):
        for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if job["name"] == TRAINER_NODE:
                _merge(pod, job["template"]["spec"]["template"])
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": k8s_name(trainjob["metadata"]["name"], "node", str(node_rank)),
                         "namespace": trainjob["metadata"].get("namespace", "default"),
                         "labels": pod.get("metadata", {}).get("labels", {})},
            "spec": {"restartPolicy": "Never", **pod["spec"]}}


def _merge(base: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        old = base.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            _merge(old, value)
        elif (isinstance(value, list) and isinstance(old, list)
              and all(isinstance(v, Mapping) and "name" in v for v in [*value, *old])):
            by_name = {item["name"]: item for item in old}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    old.append(dict(item))
        else:
            base[key] = value
