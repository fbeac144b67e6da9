"""Rendered pods and TrainJobs are valid against the Kubernetes and Kubeflow Trainer schemas."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components import podspec

K8S_VERSION = "1.32.0"
CRD = Path(podspec.__file__).with_name("schemas") / "trainer.kubeflow.org_trainjobs.yaml"


@pytest.fixture(scope="module")
def rt():
    return podspec.load_runtime()


@pytest.mark.parametrize("stage", ["download", "validate", "train_encoder", "evaluate"])
def test_stage_pod_is_a_valid_v1_pod(rt, stage):
    pod = podspec.stage_pod(stage, rt, run_id="manual__2026-11-27T05:00:00+00:00")
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    c = pod["spec"]["containers"][0]
    assert f"dvc repro --pull {stage}" in c["command"][-1]
    assert c["securityContext"]["runAsNonRoot"] is True
    assert len(pod["metadata"]["name"]) <= 63


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


def test_k8s_name_is_dns_1123():
    assert podspec.k8s_name("lpr", "train_encoder", "manual__2026-11-27T05:00:00+00:00") == (
        "lpr-train-encoder-manual-2026-11-27t05-00-00-00-00"
    )
    assert len(podspec.k8s_name("x" * 100)) == 63


def _trainjob_schema():
    docs = [d for d in yaml.safe_load_all(CRD.read_text()) if d]
    version = next(v for v in docs[0]["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


def test_trainjob_validates_against_the_kubeflow_trainer_crd(rt, tmp_path):
    (tmp_path / "dvc.yaml").write_text(ENCODER_DVC_YAML.format(module="lpr_core.stages.train_encoder"))
    tj = podspec.encoder_trainjob(rt, run_id="r1", num_nodes=4, gpus_per_node=8, dvc_yaml=tmp_path / "dvc.yaml")
    jsonschema.validate(tj, _trainjob_schema())
    assert tj["spec"]["trainer"]["numNodes"] == 4
    assert tj["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    bad = copy.deepcopy(tj)
    bad["spec"]["trainer"]["numNodes"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _trainjob_schema())


# --- the encoder TrainJob's command, from dvc.yaml -------------------------------------------------

ENCODER_DVC_YAML = """\
stages:
  prepare:
    cmd: python prep.py
    deps: [prep.py]
    outs: [data/prepare]
  train_encoder:
    cmd: python -m {module} --epochs 2 --out "data/encoder"
    deps: [data/prepare, {module}.py]
    outs: [data/encoder]
"""


def _encoder_stage(tmp_path, module="lpr_core.stages.train_encoder"):
    from lpr_core.dvcgraph import load_stages

    (tmp_path / "dvc.yaml").write_text(ENCODER_DVC_YAML.format(module=module))
    return {s.name: s for s in load_stages(tmp_path / "dvc.yaml")}["train_encoder"]


def test_trainjob_runs_the_stage_arguments_under_torchrun_with_the_kubeflow_rendezvous(rt, tmp_path):
    (tmp_path / "dvc.yaml").write_text(ENCODER_DVC_YAML.format(module="lpr_core.stages.train_encoder"))
    tj = podspec.encoder_trainjob(rt, run_id="r7", num_nodes=2, gpus_per_node=4, dvc_yaml=tmp_path / "dvc.yaml")
    jsonschema.validate(tj, _trainjob_schema())
    trainer = tj["spec"]["trainer"]
    assert trainer["command"][:2] == ["bash", "-c"]
    script = trainer["command"][2]
    lines = script.splitlines()
    torchrun = next(x for x in lines if x.startswith("torchrun "))
    for var, flag in (("PET_NNODES", "--nnodes"), ("PET_NODE_RANK", "--node-rank"),
                      ("PET_MASTER_ADDR", "--master-addr"), ("PET_MASTER_PORT", "--master-port")):
        assert f'{flag}="${var}"' in torchrun
    assert '--nproc-per-node="${PET_NPROC_PER_NODE:-4}"' in torchrun
    assert torchrun.endswith("-m lpr_core.stages.train_encoder --epochs 2 --out data/encoder")
    assert lines.index("dvc repro --pull prepare") < lines.index(torchrun)
    rank0 = lines.index('if [ "$PET_NODE_RANK" = "0" ]; then')
    assert lines[rank0 + 1:rank0 + 4] == ["  dvc commit --force train_encoder", "  dvc push --run-cache train_encoder",
                                          "fi"]
    assert {"name": "LPR_PIPELINE_RUN_ID", "value": "r7"} in trainer["env"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert "args" not in trainer


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
    from lpr_core.dvcgraph import load_stages

    if not podspec.DVC_YAML.exists() or "train_encoder" not in {s.name for s in load_stages(podspec.DVC_YAML)}:
        pytest.skip("the project's dvc.yaml has no train_encoder stage yet")
    tj = podspec.encoder_trainjob(rt, run_id="r1")  # its cmd must be a literal `python -m ... ARGS`
    jsonschema.validate(tj, _trainjob_schema())


def test_pod_template_has_nothing_of_one_run(rt):
    template = podspec.stage_pod_template("evaluate", rt)
    kubernetes_validate.validate(template, K8S_VERSION, strict=True)
    names = [e["name"] for e in template["spec"]["containers"][0]["env"]]
    assert "LPR_PIPELINE_RUN_ID" not in names and "lpr/run" not in template["metadata"]["labels"]
    pod = podspec.stage_pod("evaluate", rt, run_id="r1")
    assert pod["spec"]["containers"][0]["env"][-1] == {"name": "LPR_PIPELINE_RUN_ID", "value": "r1"}
    assert pod["spec"]["nodeSelector"] == template["spec"]["nodeSelector"]


TOY_TRAIN = """\
import json, sys
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
                                                "args": sys.argv[1:],
                                                "prepared": Path("data/prepare/x.txt").read_text()}))
dist.destroy_process_group()
"""


def _run(cmd, cwd, env=None, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_torchrun_script_trains_on_two_nodes_and_only_rank_0_records(tmp_path):
    """Two "nodes" (checkouts) rendezvous on loopback; node 0's outputs reach the DVC remote's run cache."""
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    image = tmp_path / "image"  # what the stage image holds: the checkout, no data, no dvc.lock
    image.mkdir()
    (image / "prep.py").write_text("from pathlib import Path\nPath('data/prepare').mkdir(parents=True)\n"
                                   "Path('data/prepare/x.txt').write_text('prepared')\n")
    (image / "toytrain.py").write_text(TOY_TRAIN)
    stage = _encoder_stage(image, module="toytrain")
    _run(["git", "init", "-q"], image)
    _run([*dvc, "init", "-q"], image)
    _run([*dvc, "remote", "add", "-d", "store", str(tmp_path / "remote")], image)

    def checkout(name):
        return Path(shutil.copytree(image, tmp_path / name, symlinks=True))

    upstream = checkout("prepare-pod")  # what the prepare pod did: run it, push outputs and run cache
    _run([*dvc, "repro", "--single-item", "prepare"], upstream, env)
    _run([*dvc, "push", "--run-cache", "prepare"], upstream, env)

    script = podspec.torchrun_script(stage, "toytrain", nproc_per_node=1)
    nodes = [checkout("node0"), checkout("node1")]
    port = _free_port()
    procs = [subprocess.Popen(["bash", "-c", script], cwd=node, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**env, "PET_NNODES": "2", "PET_NPROC_PER_NODE": "1",
                                              "PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": "127.0.0.1",
                                              "PET_MASTER_PORT": str(port)})
             for rank, node in enumerate(nodes)]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    model = json.loads((nodes[0] / "data/encoder/model.json").read_text())
    assert model == {"world_size": 2, "rank_sum": 3.0, "args": ["--epochs", "2", "--out", "data/encoder"],
                     "prepared": "prepared"}
    assert "train_encoder" in (nodes[0] / "dvc.lock").read_text()
    assert not (nodes[1] / "data/encoder").exists()
    assert "train_encoder" not in ((nodes[1] / "dvc.lock").read_text() if (nodes[1] / "dvc.lock").exists() else "")

    downstream = checkout("index-pod")  # the next stage's pod restores train_encoder, it does not rerun it
    restored = _run([*dvc, "repro", "--pull", "train_encoder"], downstream, env)
    assert "Stage 'train_encoder' is cached - skipping run" in restored.stdout, restored.stdout
    assert json.loads((downstream / "data/encoder/model.json").read_text()) == model


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
