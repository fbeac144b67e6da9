"""The DAG files parse fast and light, derive their tasks from dvc.yaml, and render valid pods."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
K8S_VERSION = "1.32.0"
HEAVY = ("torch", "mlflow", "dvc", "great_expectations", "faiss", "img2dataset", "pandas")

PARSE_PROBE = r"""
import json, os, sys, time
import airflow.sdk, airflow.providers.standard.operators.bash  # what the DAG processor pre-imports
from airflow.dag_processing.dagbag import DagBag
out = {}
for runner in ("local", "kubernetes"):
    os.environ["LPR_RUNNER"] = runner
    if runner == "kubernetes":
        import airflow.providers.cncf.kubernetes.operators.pod  # noqa: F401  (imported once per process)
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    seconds = time.perf_counter() - t0
    out[runner] = {
        "seconds": seconds,
        "errors": {k: v[-2000:] for k, v in bag.import_errors.items()},
        "dags": sorted(bag.dags),
        "tasks": {d: [t.task_id for t in bag.dags[d].tasks] for d in bag.dags},
        "heavy": [m for m in sys.argv[2].split(",") if m in sys.modules],
    }
print("PROBE" + json.dumps(out))
"""


@pytest.fixture
def pipeline(dagbag, dag_env, project):
    """lpr_pipeline built on the tiny project; call with the runner (and extra environment)."""

    def build(runner: str = "local", **env: str):
        dag_env(LPR_PROJECT_DIR=project, LPR_RUNNER=runner, **env)
        bag = dagbag()
        assert not bag.import_errors, bag.import_errors
        return bag.dags["lpr_pipeline"]

    return build


def test_dagbag_has_no_import_errors_parses_in_under_a_second_and_imports_nothing_heavy(project, stage_names):
    env = {**os.environ, "LPR_PROJECT_DIR": str(project),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(DAGS)])}
    proc = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(DAGS), ",".join(HEAVY)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PROBE"))
    result = json.loads(line[len("PROBE"):])
    for runner, r in result.items():
        assert r["errors"] == {}, (runner, r["errors"])
        assert r["dags"] == ["lpr_pipeline", "lpr_promote"]
        first = ["configure_run"] if runner == "local" else []
        assert r["tasks"]["lpr_pipeline"] == [*first, *stage_names, "promote"]
        assert r["heavy"] == [], f"{runner}: parsing imported {r['heavy']}"
        assert r["seconds"] < 1.0, f"{runner}: DagBag took {r['seconds']:.2f} s"


def test_tasks_and_order_come_from_dvc_yaml(pipeline, project, stage_names):
    # Reverse the file order of the stages: the DAG must follow the data flow, not the file.
    doc = yaml.safe_load((project / "dvc.yaml").read_text())
    doc["stages"] = dict(reversed(list(doc["stages"].items())))
    doc["stages"]["report"] = {"cmd": "python stage.py report data/report", "deps": ["data/prepare"],
                               "outs": ["data/report"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    dag = pipeline()
    from lpr_core.dvcgraph import load_stages

    order = [s.name for s in load_stages(project / "dvc.yaml")]
    assert set(order) == {*stage_names, "report"}
    assert [t.task_id for t in dag.tasks] == ["configure_run", *order, "promote"]
    assert dag.task_dict["configure_run"].downstream_task_ids == {order[0]}
    for before, after in zip(order, order[1:]):
        assert dag.task_dict[before].downstream_task_ids == {after}
    assert dag.task_dict[order[-1]].downstream_task_ids == {"promote"}
    assert dag.max_active_tasks == 1 and dag.max_active_runs == 1  # one checkout


def test_local_stage_tasks_run_dvc_repro_single_item_in_the_checkout(pipeline, project, stage_names):
    dag = pipeline()
    for name in stage_names:
        task = dag.task_dict[name]
        assert task.bash_command.endswith(f"-m dvc repro --single-item {name}") or \
            task.bash_command.endswith(f"; dvc repro --single-item {name}")
        assert task.cwd == str(project)
        assert task.env == {"LPR_PIPELINE_RUN_ID": "{{ run_id }}",
                            "LPR_PARAMS_OVERRIDES": "{{ params.params_overrides | tojson }}",
                            "LPR_DATA_URL": "{{ params.data_url }}"}
        assert task.append_env is True
        assert not task.skip_on_exit_code  # a stage exiting 99 fails, it is not skipped
        assert task.execution_timeout is not None and task.execution_timeout > timedelta(0)
        assert task.on_failure_callback
    download, prepare = dag.task_dict["download"], dag.task_dict["prepare"]
    assert download.retries == 3 and download.retry_exponential_backoff == 2.0
    assert download.max_retry_delay == timedelta(seconds=1800)
    assert prepare.retries == 0
    assert dag.task_dict["train_encoder"].execution_timeout == timedelta(minutes=2880)
    assert dag.task_dict["promote"].bash_command.endswith("promote --candidate-from data/evaluate")
    assert dag.task_dict["promote"].pool == "lpr_promote"
    configure = dag.task_dict["configure_run"]
    assert configure.bash_command.endswith("-m components.pod configure") and configure.cwd == str(project)
    assert configure.env == task.env


def test_settings_file_and_environment_configure_the_dag(pipeline, settings_file):
    path = settings_file(promote_command="lpr promote --candidate-from data/evaluate --dry-run",
                         default_timeout_minutes=5, stage_timeout_minutes={"validate": 7}, retries={"prepare": 2})
    dag = pipeline(LPR_AIRFLOW_CONFIG=path)
    assert dag.task_dict["validate"].execution_timeout == timedelta(minutes=7)
    assert dag.task_dict["evaluate"].execution_timeout == timedelta(minutes=5)
    assert dag.task_dict["prepare"].retries == 2 and dag.task_dict["download"].retries == 0
    assert dag.task_dict["promote"].bash_command.endswith("--dry-run")
    dag = pipeline(LPR_AIRFLOW_CONFIG=path, LPR_PROMOTE_COMMAND="echo promoted")
    assert dag.task_dict["promote"].bash_command.endswith("; echo promoted")


@pytest.mark.parametrize(("content", "message"), [
    ("runnr: local\n", "unknown setting(s) runnr"),
    ("kubernetes: {imag: x}\n", "kubernetes: unknown setting(s) imag"),
    ("runner: docker\n", "runner must be one of local, kubernetes"),
    ("edges: dataflow\n", "needs the kubernetes runner"),
    ("retries: {download: -1}\n", "retries.download must be an integer >= 0"),
    ("stage_timeout_minutes: {download: 0}\n", "stage_timeout_minutes.download: must be > 0"),
    ("- a list\n", "top level must be a mapping"),
])
def test_bad_settings_name_the_file_and_key(tmp_path, content, message):
    from components.orchestration import SettingsError, load_settings

    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(SettingsError, match="bad.yaml") as exc:
        load_settings({"LPR_AIRFLOW_CONFIG": str(path)})
    assert message in str(exc.value)
    with pytest.raises(SettingsError, match="LPR_PROJECT_DIR"):
        load_settings({"LPR_PROJECT_DIR": "relative/dir"})
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings({"LPR_AIRFLOW_CONFIG": str(tmp_path / "missing.yaml")})


def test_default_project_dir_is_the_repository():
    from components.orchestration import load_settings

    settings = load_settings({})
    assert settings.project_dir == REPO
    assert settings.dvc_yaml == REPO / "dvc.yaml"
    assert settings.runner == "local"


@pytest.mark.parametrize(("name", "good", "bad"), [
    ("params_overrides", [{}, {"train_encoder.train.lr": 0.003}, {"download.retry_pass.attempts": 1,
                                                                 "validate.required": ["videoinfo"]}],
     [[], "x", None, {"train_encoder.train.lrr": 0.003}, {"train_encoder.train": {"lr": 1}}, {"nope": 1}]),
    ("data_url", ["", "s3://bucket/lpr4m", "/data/lpr4m", "gs://b/x"], [3, None, ["s3://x"], "x" * 3000]),
])
def test_trigger_params_are_validated_when_a_run_is_created(pipeline, name, good, bad):
    from airflow.sdk.exceptions import ParamValidationError

    param = pipeline().params.get_param(name)
    for value in good:
        assert param.resolve(value) == value
    for value in bad:
        with pytest.raises(ParamValidationError):
            param.resolve(value)


def test_a_bad_override_key_is_named_when_the_run_is_created(pipeline):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="train_encoder.train.lrr"):
        pipeline().params.get_param("params_overrides").resolve({"train_encoder.train.lrr": 0.003})


def test_the_inert_params_are_gone(pipeline):
    assert set(pipeline().params.keys()) == {"params_overrides", "data_url"}


def test_kfp_pipeline_inputs_are_the_dag_params():
    from lpr_dags.builders import pipeline_params

    from components.kfp_pipeline import PIPELINE_INPUTS

    assert {name: p.value for name, p in pipeline_params().items()} == PIPELINE_INPUTS


def _pod_manifest(op) -> dict:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


def test_kubernetes_runner_renders_every_task_as_a_valid_pod(pipeline, capsys, stage_names):
    import kubernetes_validate

    from components import podspec, pss

    rt = podspec.load_runtime()
    dag = pipeline("kubernetes")
    for task in dag.tasks:
        assert type(task).__name__ == "KubernetesPodOperator"
        pod = _pod_manifest(task)
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        spec, (container,) = pod["spec"], pod["spec"]["containers"]
        assert container["image"] == rt.image and container["workingDir"] == rt.workdir
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)), names
        assert container["env"] == podspec.container_env(rt)  # the runtime's values and secret keys, nothing else
        assert container["args"] == podspec.run_arguments("{{ run_id }}", "{{ params.params_overrides | tojson }}",
                                                          "{{ params.data_url }}")
        assert pss.restricted_violations(pod) == [], task.task_id
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["automountServiceAccountToken"] is False
        assert {m["mountPath"] for m in container["volumeMounts"]} == {rt.workdir, "/tmp", rt.home, "/dev/shm"}
        res = container["resources"]
        assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
        assert container["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 1000
        assert spec["serviceAccountName"] == rt.service_account and pod["metadata"]["namespace"] == rt.namespace
        assert spec["activeDeadlineSeconds"] == int(task.execution_timeout.total_seconds())
        if task.task_id == "promote":
            assert container["command"] == podspec.exec_command("lpr promote --candidate-from data/evaluate",
                                                                restore="evaluate")
            assert task.pool == "lpr_promote"
            continue
        assert container["command"] == podspec.stage_command(task.task_id)
        gpus = rt.resources(task.task_id).gpus
        if gpus:
            assert res["limits"]["nvidia.com/gpu"] == str(gpus)
            assert spec["nodeSelector"] == dict(rt.gpu_node_selector)
            assert spec["tolerations"] == [dict(t) for t in rt.gpu_tolerations]
        else:
            assert "nvidia.com/gpu" not in res["limits"] and not spec.get("nodeSelector") and not spec.get("tolerations")
    assert any(rt.resources(s).gpus for s in stage_names) and not all(rt.resources(s).gpus for s in stage_names)
    dag.task_dict["train_encoder"].dry_run()
    out = capsys.readouterr().out  # the YAML, after Airflow's own log lines
    printed = yaml.safe_load("\n".join(x for x in out.splitlines() if not re.match(r"\d{4}-\d\d-\d\dT", x)))
    assert printed["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_kubernetes_pods_render_the_run_id_and_params(pipeline):
    from airflow.sdk.definitions.param import ParamsDict

    op = pipeline("kubernetes").task_dict["validate"]
    run_id = "manual__2026-11-27T05:00:00+00:00"
    op.render_template_fields({"run_id": run_id, "params": ParamsDict({
        "params_overrides": {"train_encoder.train.lr": 0.003, "prepare.seed": 1}, "data_url": "s3://b/lpr4m"})})
    args = _pod_manifest(op)["spec"]["containers"][0]["args"]
    assert args[:2] == ["--run-id", run_id] and args[4:] == ["--data-url", "s3://b/lpr4m"]
    assert args[2] == "--params-overrides"
    assert json.loads(args[3]) == {"train_encoder.train.lr": 0.003, "prepare.seed": 1}


def test_dataflow_edges_and_image_override_on_kubernetes(pipeline, settings_file, project):
    path = settings_file(runner="kubernetes", edges="dataflow", kubernetes={"namespace": "lpr-staging"})
    dag = pipeline("kubernetes", LPR_AIRFLOW_CONFIG=path, LPR_IMAGE="registry.example/lpr-train:9.9.9")
    from lpr_core.dvcgraph import load_stages

    stages = load_stages(project / "dvc.yaml")
    for s in stages:
        assert dag.task_dict[s.name].upstream_task_ids == set(s.upstream)
    pod = _pod_manifest(dag.task_dict["download"])
    assert pod["spec"]["containers"][0]["image"] == "registry.example/lpr-train:9.9.9"
    assert pod["metadata"]["namespace"] == "lpr-staging"


def _render_bash(task, params: dict) -> str:
    from airflow.sdk.definitions.param import ParamsDict

    task.render_template_fields({"run_id": "r", "params": ParamsDict(params)})
    return task.bash_command


def test_promote_dag_runs_the_gate_or_the_rollback(dagbag, dag_env, project, tmp_path):
    from airflow.sdk.exceptions import ParamValidationError

    dag_env(LPR_PROJECT_DIR=project)
    bag = dagbag()
    assert not bag.import_errors
    dag = bag.dags["lpr_promote"]
    assert dag.params.get_param("action").resolve("rollback") == "rollback"
    for bad in (("action", "demote"), ("version", "v1"), ("version", "0"), ("version", "1; rm -rf /")):
        with pytest.raises(ParamValidationError):
            dag.params.get_param(bad[0]).resolve(bad[1])
    (task,) = dag.tasks
    assert task.pool == "lpr_promote"
    assert _render_bash(task, {"action": "rollback", "version": None}).endswith("-m lpr_core.cli rollback") or \
        task.bash_command.endswith("lpr rollback")
    (task,) = dagbag().dags["lpr_promote"].tasks
    assert _render_bash(task, {"action": "promote", "version": "12"}).endswith("promote --version 12")
    (task,) = dagbag().dags["lpr_promote"].tasks
    command = _render_bash(task, {"action": "promote", "version": None})
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "needs a model version" in proc.stderr


def test_missing_dvc_yaml_is_a_clear_import_error(dagbag, dag_env, tmp_path):
    dag_env(LPR_PROJECT_DIR=tmp_path)
    errors = dagbag().import_errors
    (message,) = [v for k, v in errors.items() if Path(k).name == "lpr_pipeline.py"]
    assert "no dvc.yaml" in message and "LPR_PROJECT_DIR" in message


def test_kubernetes_runner_warns_about_stages_pods_cannot_restore(pipeline, project, caplog):
    doc = yaml.safe_load((project / "dvc.yaml").read_text())
    doc["stages"]["validate"]["outs"] = [{"data/validate": {"cache": False}}]
    (project / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with caplog.at_level(logging.WARNING, logger="lpr.pipeline"):
        pipeline("kubernetes")
    (message,) = [r.getMessage() for r in caplog.records if r.name == "lpr.pipeline"]
    assert "'validate'" in message and "data/validate" in message and "cannot restore them" in message
