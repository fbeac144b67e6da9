"""The KFP v2 pipeline compiles, in its own environment, to the same steps as the pods.

``tests/dags/test_kfp_matches_dag.py`` compares the committed ``components/pipeline.yaml`` with the
Airflow DAG's pods, step by step.

kfp cannot live in the main environment (it pins kubernetes<31 and protobuf<7): the pipeline is
compiled by the KFP environment's interpreter (``$LPR_KFP_PYTHON``, default ``.venv-kfp/bin/python``)
and the YAML it writes is checked here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components import kfp_pipeline, podspec
from tests.components.kfp_steps import read_compiled, step_pod

REPO = Path(__file__).resolve().parents[2]
KFP_PYTHON = Path(os.environ.get("LPR_KFP_PYTHON", REPO / ".venv-kfp" / "bin" / "python"))
STAGES = ("download", "validate", "prepare", "train_detector", "train_encoder", "index_gallery", "evaluate")


def _kfp_available() -> bool:
    if not KFP_PYTHON.exists():
        return False
    return subprocess.run([str(KFP_PYTHON), "-c", "import kfp, kfp.kubernetes"], capture_output=True).returncode == 0


needs_kfp = pytest.mark.skipif(
    not _kfp_available(),
    reason=f"the KFP environment is missing ({KFP_PYTHON}): build it with `make kfp` "
           "(requirements/kfp-lock.txt) or point LPR_KFP_PYTHON at its python")


def _compile(out: Path, dvc_yaml: Path) -> dict:
    proc = subprocess.run([str(KFP_PYTHON), "-m", "components.kfp_pipeline", "--out", str(out),
                           "--dvc-yaml", str(dvc_yaml)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_compiled(out)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kfp")
    lines = ["stages:"]
    previous = "urls.txt"
    for name in STAGES:
        lines += [f"  {name}:", f"    cmd: python -m lpr_core.stages.{name}", f"    deps: [{previous}]",
                  f"    outs: [data/{name}]"]
        previous = f"data/{name}"
    (tmp / "dvc.yaml").write_text("\n".join(lines) + "\n")
    return _compile(tmp / "pipeline.yaml", tmp / "dvc.yaml")


@needs_kfp
def test_every_stage_is_a_step_in_dvc_yaml_order_then_promote(compiled):
    tasks = compiled["pipeline"]["root"]["dag"]["tasks"]
    steps = [*STAGES, "promote"]
    assert set(tasks) == {f"lpr-{s.replace('_', '-')}" for s in steps}
    for before, after in zip(steps, steps[1:]):
        assert tasks[f"lpr-{after.replace('_', '-')}"]["dependentTasks"] == [f"lpr-{before.replace('_', '-')}"]
    for task in tasks.values():
        assert not task.get("cachingOptions", {}).get("enableCache"), "DVC's run cache decides, not KFP's"
        run_id = task["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"]
        assert run_id == "{{$.pipeline_job_name}}"


@needs_kfp
def test_steps_run_the_podspec_container_with_its_resources_and_gpus(compiled):
    rt = podspec.load_runtime()
    executors = compiled["pipeline"]["deploymentSpec"]["executors"]
    for stage in STAGES:
        key = f"exec-lpr-{stage.replace('_', '-')}"
        container, platform = executors[key]["container"], compiled["platform"][key]
        expected = podspec.stage_container(stage, rt)
        assert container["image"] == rt.image
        assert container["command"] == expected["command"] == ["python", "-m", "components.pod", "run", stage]
        assert container["args"] == podspec.run_arguments("{{$.inputs.parameters['run_id']}}",
                                                          "{{$.inputs.parameters['params_overrides']}}",
                                                          "{{$.inputs.parameters['data_url']}}")
        pod = step_pod(compiled, stage)
        assert pod["spec"]["containers"][0]["env"] == expected["env"]  # values and secret keys alike
        assert pod["spec"]["containers"][0]["volumeMounts"] == expected["volumeMounts"]
        assert pod["spec"]["volumes"] == podspec.volumes(rt)
        res = rt.resources(stage)
        assert container["resources"]["resourceCpuLimit"] == res.cpu
        assert container["resources"]["resourceMemoryRequest"] == res.memory
        assert int(platform["activeDeadlineSeconds"]) > 0
        if res.gpus:
            acc = container["resources"]["accelerator"]
            assert (acc["resourceType"], acc["resourceCount"]) == (rt.gpu_resource, str(res.gpus))
            assert platform["nodeSelector"]["labels"] == dict(rt.gpu_node_selector)
            assert platform["tolerations"] == [dict(t) for t in rt.gpu_tolerations]
        else:
            assert "accelerator" not in container["resources"]
            assert "nodeSelector" not in platform and "tolerations" not in platform


@needs_kfp
def test_steps_pass_the_restricted_pod_security_standard(compiled):
    from components import pss

    for step in (*STAGES, "promote"):
        pod = step_pod(compiled, step)
        assert pss.restricted_violations(pod) == [], step
        assert pod["spec"]["containers"][0]["securityContext"]["runAsUser"] == 1000


@needs_kfp
def test_retries_timeouts_and_the_gate_follow_the_dag_settings(compiled):
    settings = kfp_pipeline.load_dag_settings({})
    tasks = compiled["pipeline"]["root"]["dag"]["tasks"]
    retry = tasks["lpr-download"]["retryPolicy"]
    assert retry["maxRetryCount"] == settings.retries["download"]
    assert retry["backoffFactor"] == settings.retry_backoff
    assert "retryPolicy" not in tasks["lpr-prepare"]
    deadline = compiled["platform"]["exec-lpr-train-encoder"]["activeDeadlineSeconds"]
    assert int(deadline) == int(settings.timeout("train_encoder").total_seconds())
    promote = compiled["pipeline"]["deploymentSpec"]["executors"]["exec-lpr-promote"]["container"]
    assert promote["command"] == podspec.exec_command(settings.promote_command, restore="evaluate")


@needs_kfp
def test_pipeline_inputs_and_defaults(compiled):
    # tests/dags checks that PIPELINE_INPUTS are the Airflow DAG's params and defaults.
    inputs = compiled["pipeline"]["root"]["inputDefinitions"]["parameters"]
    assert {name: spec["defaultValue"] for name, spec in inputs.items()} == kfp_pipeline.PIPELINE_INPUTS
    assert inputs["params_overrides"]["parameterType"] == "STRUCT"


@needs_kfp
def test_committed_pipeline_yaml_is_up_to_date(tmp_path):
    assert (REPO / "dvc.yaml").is_file(), "dvc.yaml is missing"
    assert kfp_pipeline.PIPELINE_YAML.is_file(), "components/pipeline.yaml is missing: run `make kfp` and commit it"
    fresh = tmp_path / "pipeline.yaml"
    _compile(fresh, REPO / "dvc.yaml")
    assert fresh.read_text() == kfp_pipeline.PIPELINE_YAML.read_text(), \
        "components/pipeline.yaml is stale: run `make kfp` and commit it"


def test_without_kfp_the_command_says_how_to_get_it():
    proc = subprocess.run([sys.executable, "-m", "components.kfp_pipeline", "--out", os.devnull], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        import kfp  # noqa: F401
    except ImportError:
        assert proc.returncode == 2 and "make kfp" in proc.stderr
    else:  # pragma: no cover - the main environment has no kfp
        pytest.skip("kfp is importable here")
