"""Rendered pods and TrainJobs are valid against the Kubernetes and Kubeflow Trainer schemas, field by field."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components import crd, podspec

K8S_VERSION = "1.32.0"
REPO = Path(__file__).resolve().parents[2]
STAGES = ("download", "validate", "prepare", "train_detector", "train_encoder", "index_gallery", "evaluate")


@pytest.fixture(scope="module")
def rt():
    return podspec.load_runtime()


def _secret_refs(env: list[dict]) -> dict[str, tuple[str, str, bool]]:
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"],
                        e["valueFrom"]["secretKeyRef"]["optional"]) for e in env if "valueFrom" in e}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_pod_is_a_valid_v1_pod_running_the_pod_module(rt, stage):
    pod = podspec.stage_pod(stage, rt, run_id="manual__2026-11-27T05:00:00+00:00",
                            params_overrides='{"train_encoder.train.lr":0.003}', data_url="s3://b/lpr4m")
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["python", "-m", "components.pod", "run", stage]
    assert c["args"] == ["--run-id", "manual__2026-11-27T05:00:00+00:00",
                         "--params-overrides", '{"train_encoder.train.lr":0.003}', "--data-url", "s3://b/lpr4m"]
    assert c["workingDir"] == rt.workdir
    assert len(pod["metadata"]["name"]) <= 63


def test_every_container_gets_the_runtime_env_and_each_secret_key_by_reference(rt):
    (c,) = podspec.stage_pod_template("validate", rt)["spec"]["containers"]
    plain = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert plain == dict(rt.env)
    assert "LPR_RUNS_URL" in plain and "LPR_STATE_URL" in plain
    expected = {key: (secret, key, True) for secret, keys in rt.secret_env.items() for key in keys}
    assert _secret_refs(c["env"]) == expected
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"} <= set(expected)
    assert "envFrom" not in c  # values never in the manifest; the same form as in KFP steps and TrainJobs


def test_pods_write_only_in_emptydirs_and_mount_no_token(rt):
    spec = podspec.stage_pod_template("train_encoder", rt)["spec"]
    (c,) = spec["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert all(set(v) == {"name", "emptyDir"} for v in volumes.values())
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": rt.shm_size}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {rt.workdir: "workspace", "/tmp": "tmp", rt.home: "home", "/dev/shm": "dshm"}
    assert set(mounts.values()) == set(volumes)


def test_gpu_stages_request_gpus_with_selector_and_tolerations(rt):
    gpu = podspec.stage_pod("train_encoder", rt)
    cpu = podspec.stage_pod("download", rt)
    assert gpu["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["spec"]["nodeSelector"] and gpu["spec"]["tolerations"]
    assert "nvidia.com/gpu" not in cpu["spec"]["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in cpu["spec"]


def test_invalid_pod_is_caught_by_the_schema(rt):
    pod = copy.deepcopy(podspec.stage_pod("download", rt))
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"not": "a quantity"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_service_account_mounts_no_token_and_is_valid(rt):
    sa = podspec.service_account(rt)
    kubernetes_validate.validate(sa, K8S_VERSION, strict=True)
    assert sa["automountServiceAccountToken"] is False and sa["metadata"]["name"] == rt.service_account


def test_runtime_workdir_and_home_are_the_image_s(rt):
    """Pods, KFP steps and TrainJob nodes start in the image's WORKDIR: it must be runtime.yaml's workdir."""
    dockerfile = (REPO / "docker" / "train.Dockerfile").read_text()
    assert re.findall(r"^WORKDIR (\S+)", dockerfile, re.M)[-1] == rt.workdir
    assert re.search(rf"^ENV HOME={re.escape(rt.home)}$", dockerfile, re.M)
    assert re.search(rf"^ARG LPR_UID={rt.run_as_user}$", dockerfile, re.M)


def test_k8s_name_is_dns_1123():
    assert podspec.k8s_name("lpr", "train_encoder", "manual__2026-11-27T05:00:00+00:00") == (
        "lpr-train-encoder-manual-2026-11-27t05-00-00-00-00"
    )
    assert len(podspec.k8s_name("x" * 100)) == 63


def test_bad_secret_keys_name_the_file(tmp_path):
    path = tmp_path / "runtime.yaml"
    path.write_text("image: x\nsecret_env:\n  lpr-dvc-remote: AWS_ACCESS_KEY_ID\n")
    with pytest.raises(ValueError, match=r"runtime.yaml: secret_env.lpr-dvc-remote must be a list"):
        podspec.load_runtime(path)


# --- the TrainJob ----------------------------------------------------------------------------------

ENCODER_DVC_YAML = """\
stages:
  prepare:
    cmd: python toystage.py prepare data/prepare
    deps: [toystage.py]
    outs: [data/prepare]
  train_encoder:
    cmd: python -m {module} --epochs 2 --out "data/encoder"
    deps: [data/prepare, {module}.py]
    outs: [data/encoder]
  index:
    cmd: python toystage.py index data/index data/encoder/model.json
    deps: [toystage.py, data/encoder]
    outs: [data/index]
"""


def _trainjob(rt, tmp_path, **kwargs):
    (tmp_path / "dvc.yaml").write_text(ENCODER_DVC_YAML.format(module="lpr_core.stages.train_encoder"))
    return podspec.encoder_trainjob(rt, dvc_yaml=tmp_path / "dvc.yaml", **kwargs)


def test_trainjob_is_complete_field_by_field(rt, tmp_path):
    tj = _trainjob(rt, tmp_path, run_id="r1", num_nodes=4, gpus_per_node=8,
                   params_overrides='{"train_encoder.train.lr":0.003}', data_url="s3://b/lpr4m")
    crd.validate_trainjob(tj)
    assert tj["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and tj["kind"] == "TrainJob"
    assert tj["metadata"] == {"name": "lpr-encoder-r1", "namespace": rt.namespace,
                              "labels": {"app.kubernetes.io/name": "lpr-pipeline", "lpr/run": "r1"}}
    spec = tj["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime",
                                  "apiGroup": "trainer.kubeflow.org"}
    trainer = spec["trainer"]
    assert trainer["image"] == rt.image
    assert trainer["command"][:2] == ["bash", "-c"] and "args" not in trainer
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 8)
    res = rt.resources("train_encoder")
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": res.cpu, "memory": res.memory},
                                           "limits": {"cpu": res.cpu, "memory": res.memory, "nvidia.com/gpu": "8"}}
    plain = {e["name"]: e["value"] for e in trainer["env"] if "value" in e}
    assert plain == {**rt.env, "LPR_PIPELINE_RUN_ID": "r1", "LPR_PARAMS_OVERRIDES": '{"train_encoder.train.lr":0.003}',
                     "LPR_DATA_URL": "s3://b/lpr4m"}
    # the DVC remote's and MLflow's credentials: the secrets, key by key (a TrainJob cannot take envFrom)
    assert _secret_refs(trainer["env"]) == {k: (s, k, True) for s, keys in rt.secret_env.items() for k in keys}

    (patch,) = spec["runtimePatches"]
    assert patch["manager"] == podspec.PATCH_MANAGER
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    template = job["template"]["spec"]["template"]
    assert template["metadata"]["labels"] == {"app.kubernetes.io/name": "lpr-pipeline", "lpr/stage": "train-encoder"}
    pod = template["spec"]
    assert pod["serviceAccountName"] == rt.service_account
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["volumes"] == [
        {"name": "workspace", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {"sizeLimit": rt.tmp_size}},
        {"name": "home", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": rt.shm_size}},
    ]
    (node,) = pod["containers"]
    assert node["name"] == "node"
    assert node["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False,
        "privileged": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert node["volumeMounts"] == [{"name": "workspace", "mountPath": rt.workdir}, {"name": "tmp", "mountPath": "/tmp"},
                                    {"name": "home", "mountPath": rt.home}, {"name": "dshm", "mountPath": "/dev/shm"}]
    assert set(node) == {"name", "securityContext", "volumeMounts"}


def test_the_crd_check_refuses_what_the_api_server_would_drop(rt, tmp_path):
    tj = _trainjob(rt, tmp_path)
    bad = copy.deepcopy(tj)
    bad["spec"]["trainer"]["numNodes"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        crd.validate_trainjob(bad)
    # envFrom is no field of a container patch: the API server would prune it, the strict check refuses it
    bad = copy.deepcopy(tj)
    job = bad["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    job["template"]["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "x"}}]
    jsonschema.validate(bad, crd.crd_schema(crd.TRAINJOB_CRD, "v1alpha1"))  # the raw schema lets it through
    with pytest.raises(jsonschema.ValidationError, match="envFrom"):
        crd.validate_trainjob(bad)


def test_trainjob_node_pod_is_a_valid_pod_with_the_rendezvous_and_the_patches(rt, tmp_path):
    tj = _trainjob(rt, tmp_path, run_id="r1", num_nodes=2, gpus_per_node=4)
    pod = podspec.trainjob_node_pod(tj, node_rank=1, master_addr="10.0.0.1", master_port=1234)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (node,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in node["env"]}
    assert {k: env[k] for k in ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
                                "PET_MASTER_PORT")} == {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "4",
                                                        "PET_NODE_RANK": "1", "PET_MASTER_ADDR": "10.0.0.1",
                                                        "PET_MASTER_PORT": "1234"}
    assert node["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in node["volumeMounts"]} >= {rt.workdir, "/dev/shm"}
    assert pod["spec"]["nodeSelector"] == dict(rt.gpu_node_selector)


def _encoder_stage(tmp_path, module="lpr_core.stages.train_encoder"):
    from lpr_core.dvcgraph import load_stages

    (tmp_path / "dvc.yaml").write_text(ENCODER_DVC_YAML.format(module=module))
    return {s.name: s for s in load_stages(tmp_path / "dvc.yaml")}["train_encoder"]


def test_trainjob_runs_the_stage_arguments_under_torchrun_with_the_kubeflow_rendezvous(rt, tmp_path):
    tj = _trainjob(rt, tmp_path, run_id="r7", num_nodes=2, gpus_per_node=4)
    script = tj["spec"]["trainer"]["command"][2]
    lines = script.splitlines()
    torchrun = next(x for x in lines if x.startswith("torchrun "))
    for var, flag in (("PET_NNODES", "--nnodes"), ("PET_NODE_RANK", "--node-rank"),
                      ("PET_MASTER_ADDR", "--master-addr"), ("PET_MASTER_PORT", "--master-port")):
        assert f'{flag}="${var}"' in torchrun
    assert '--nproc-per-node="${PET_NPROC_PER_NODE:-4}"' in torchrun
    assert torchrun.endswith("-m lpr_core.stages.train_encoder --epochs 2 --out data/encoder")
    assert lines.index("python -m components.pod prepare train_encoder") < lines.index(torchrun)
    rank0 = lines.index('if [ "$PET_NODE_RANK" = "0" ]; then')
    assert lines[rank0 + 1:rank0 + 3] == ["  python -m components.pod record train_encoder", "fi"]


@pytest.mark.parametrize("cmd", [
    "python -m lpr_core.stages.train_encoder --lr ${train_encoder.lr}",
    "python -m lpr_core.stages.train_encoder && echo done",
    "torchrun -m lpr_core.stages.train_encoder",
    "python -m lpr_core.stages.prepare",
])
def test_stage_arguments_refuse_commands_a_launcher_cannot_reuse(cmd):
    from lpr_core.dvcgraph import Stage

    stage = Stage("train_encoder", cmd, (), (), (), ())
    with pytest.raises(ValueError, match="train_encoder"):
        podspec.stage_arguments(stage, "lpr_core.stages.train_encoder")


def test_the_project_trainjob_renders_from_its_dvc_yaml(rt):
    tj = podspec.encoder_trainjob(rt, run_id="r1")  # its cmd must be a literal `python -m ... ARGS`
    crd.validate_trainjob(tj)


def test_pod_template_has_nothing_of_one_run(rt):
    template = podspec.stage_pod_template("evaluate", rt)
    kubernetes_validate.validate(template, K8S_VERSION, strict=True)
    (c,) = template["spec"]["containers"]
    assert "args" not in c and "LPR_PIPELINE_RUN_ID" not in [e["name"] for e in c["env"]]
    assert "lpr/run" not in template["metadata"]["labels"]
    pod = podspec.stage_pod("evaluate", rt, run_id="r1")
    assert pod["spec"]["containers"][0]["args"][:2] == ["--run-id", "r1"]
    assert pod["spec"]["nodeSelector"] == template["spec"]["nodeSelector"]


def test_uncached_outputs_are_found_per_stage(tmp_path):
    (tmp_path / "dvc.yaml").write_text("""\
stages:
  a:
    cmd: x
    outs: [{data/a: {cache: false}}, data/a2]
    metrics: [{a.json: {cache: false}}]
  b:
    cmd: y
    outs: [{data/b: {persist: true}}]
    plots: [{b.csv: {cache: true}}]
""")
    assert podspec.uncached_outputs(tmp_path / "dvc.yaml") == {"a": ("data/a", "a.json")}


# --- two TrainJob nodes for real -------------------------------------------------------------------

TOY_TRAIN = """\
import json, os, sys
from pathlib import Path
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
if dist.get_rank() == 0:
    out = Path("data/encoder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(json.dumps({"world_size": dist.get_world_size(), "rank_sum": total.item(),
                                                "args": sys.argv[1:], "run": os.environ["LPR_PIPELINE_RUN_ID"],
                                                "prepared": Path("data/prepare/x.txt").read_text()}))
with open(os.environ["TOY_LOG"], "a") as log:
    log.write(f"train_encoder rank {dist.get_rank()}\\n")
dist.destroy_process_group()
"""
#: A toy stage: ``python toystage.py NAME OUT [INPUT]`` writes OUT/x.txt (its input's content, or its name).
TOY_STAGE = """\
import os, sys
from pathlib import Path
name, out, inputs = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
out.mkdir(parents=True, exist_ok=True)
(out / "x.txt").write_text(Path(inputs[0]).read_text() if inputs else name)
with open(os.environ["TOY_LOG"], "a") as log:
    log.write(name + "\\n")
"""


def _run(cmd, cwd, env=None, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_trainjob_nodes_train_on_two_nodes_and_only_node_0_records(rt, tmp_path):
    """Two nodes, in the environment of the rendered TrainJob's node pods, rendezvous on loopback in
    workspaces of their own; node 0's outputs and record reach the next stage's pod through the remote."""
    log = tmp_path / "ran.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TOY_LOG": str(log),
           "LPR_RUNS_URL": str(tmp_path / "runs")}
    image = tmp_path / "image"  # what the stage image holds: the checkout, no data, no dvc.lock
    image.mkdir()
    (image / "toystage.py").write_text(TOY_STAGE)
    (image / "toytrain.py").write_text(TOY_TRAIN)
    stage = _encoder_stage(image, module="toytrain")
    _run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], image)
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote")], image)

    def workspace(name):
        return Path(shutil.copytree(image, tmp_path / name, symlinks=True))

    _run([sys.executable, "-m", "components.pod", "run", "prepare", "--run-id", "r1"], workspace("prepare-pod"), env)
    tj = podspec.encoder_trainjob(rt, run_id="r1", num_nodes=2, gpus_per_node=1, stage=stage, module="toytrain")
    port = _free_port()
    nodes, procs = [], []
    for rank in (0, 1):
        pod = podspec.trainjob_node_pod(tj, node_rank=rank, master_addr="127.0.0.1", master_port=port)
        (container,) = pod["spec"]["containers"]
        node_env = {**env, **{e["name"]: e["value"] for e in container["env"] if "value" in e}}
        node_env["LPR_RUNS_URL"] = env["LPR_RUNS_URL"]  # runtime.yaml's bucket stands for the object store here
        nodes.append(workspace(f"node{rank}"))
        procs.append(subprocess.Popen(container["command"], cwd=nodes[-1], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=node_env))
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    model = json.loads((nodes[0] / "data/encoder/model.json").read_text())
    assert model == {"world_size": 2, "rank_sum": 3.0, "args": ["--epochs", "2", "--out", "data/encoder"],
                     "run": "r1", "prepared": "prepare"}
    assert not (nodes[1] / "data/encoder").exists()
    assert "train_encoder" in (tmp_path / "runs" / "r1" / "train_encoder.lock.yaml").read_text()

    index = workspace("index-pod")  # the next stage's pod restores the encoder, it does not train it again
    _run([sys.executable, "-m", "components.pod", "run", "index", "--run-id", "r1"], index, env)
    assert json.loads((index / "data/index/x.txt").read_text()) == model
    ran = log.read_text().splitlines()  # every stage's work exactly once, training on both nodes
    assert sorted(ran) == ["index", "prepare", "train_encoder rank 0", "train_encoder rank 1"]
    lock = yaml.safe_load(_run([sys.executable, "-m", "components.pod", "lock", "--run", "r1"], image, env).stdout)
    assert list(lock["stages"]) == ["prepare", "train_encoder", "index"]
