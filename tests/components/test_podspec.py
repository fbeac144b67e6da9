"""Rendered pods and TrainJobs are valid against the Kubernetes and Kubeflow Trainer schemas."""

import copy
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


def test_trainjob_validates_against_the_kubeflow_trainer_crd(rt):
    tj = podspec.encoder_trainjob(rt, run_id="r1", num_nodes=4, gpus_per_node=8)
    jsonschema.validate(tj, _trainjob_schema())
    assert tj["spec"]["trainer"]["numNodes"] == 4
    assert tj["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    bad = copy.deepcopy(tj)
    bad["spec"]["trainer"]["numNodes"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _trainjob_schema())
