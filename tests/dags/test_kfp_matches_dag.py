"""Each step of the committed ``components/pipeline.yaml`` runs what the Airflow DAG's pod of that stage runs.

The same image, command, environment (values and secret keys), arguments (the run id and trigger
params: Airflow templates there, KFP placeholders here), resources, GPU scheduling, writable
mounts and user: rehearsing the DAG's pods rehearses the KFP steps too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.components.kfp_steps import read_compiled, step_pod

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag_pods():
    import os

    from airflow.dag_processing.dagbag import DagBag
    from kubernetes.client import ApiClient

    saved = {k: os.environ.pop(k, None) for k in ("LPR_PROJECT_DIR", "LPR_AIRFLOW_CONFIG", "LPR_IMAGE",
                                                  "LPR_PROMOTE_COMMAND")}
    os.environ["LPR_RUNNER"] = "kubernetes"
    try:
        bag = DagBag(dag_folder=str(REPO / "dags"))
    finally:
        os.environ.pop("LPR_RUNNER")
        os.environ.update({k: v for k, v in saved.items() if v is not None})
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["lpr_pipeline"]
    return {t.task_id: ApiClient().sanitize_for_serialization(t.build_pod_request_obj(dry_run=True))
            for t in dag.tasks}


def test_every_kfp_step_runs_the_dag_pod_of_its_stage(dag_pods):
    compiled = read_compiled(REPO / "components" / "pipeline.yaml")
    steps = sorted(k[len("exec-lpr-"):].replace("-", "_") for k in compiled["platform"])
    assert steps == sorted(dag_pods)
    for step in steps:
        airflow_pod, kfp_pod = dag_pods[step], step_pod(compiled, step)
        (a,), (k,) = airflow_pod["spec"]["containers"], kfp_pod["spec"]["containers"]
        assert k["image"] == a["image"], step
        assert k["command"] == a["command"], step
        assert k["env"] == a["env"], step
        assert k["args"][0::2] == a["args"][0::2] == ["--run-id", "--params-overrides", "--data-url"], step
        assert k["args"][1::2] == ["{{$.inputs.parameters['run_id']}}", "{{$.inputs.parameters['params_overrides']}}",
                                   "{{$.inputs.parameters['data_url']}}"]
        assert a["args"][1::2] == ["{{ run_id }}", "{{ params.params_overrides | tojson }}", "{{ params.data_url }}"]
        assert k["volumeMounts"] == a["volumeMounts"], step
        assert kfp_pod["spec"]["volumes"] == airflow_pod["spec"]["volumes"], step
        for key in ("runAsUser", "runAsGroup", "runAsNonRoot"):
            assert k["securityContext"][key] == a["securityContext"][key], step
        assert kfp_pod["spec"]["nodeSelector"] == (airflow_pod["spec"].get("nodeSelector") or {}), step
        assert kfp_pod["spec"]["tolerations"] == (airflow_pod["spec"].get("tolerations") or []), step
        kfp_container = compiled["pipeline"]["deploymentSpec"]["executors"][f"exec-lpr-{step.replace('_', '-')}"][
            "container"]
        resources = kfp_container["resources"]
        assert resources["resourceCpuLimit"] == a["resources"]["limits"]["cpu"], step
        assert resources["resourceMemoryLimit"] == a["resources"]["limits"]["memory"], step
        if "nvidia.com/gpu" in a["resources"]["limits"]:
            assert resources["accelerator"]["resourceCount"] == a["resources"]["limits"]["nvidia.com/gpu"], step
        else:
            assert "accelerator" not in resources, step
