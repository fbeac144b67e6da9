"""``dag.test()`` runs lpr_pipeline end to end (local runner) on a tiny git + DVC project."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow
STAGE_NAMES = ("download", "validate", "prepare", "train_detector", "train_encoder", "index_gallery", "evaluate")


def _records(project):
    return {n: json.loads((project / "data" / n / "record.json").read_text())
            for n in STAGE_NAMES if (project / "data" / n / "record.json").exists()}


def _build(dagbag, dag_env, project, settings_file, dag_id="lpr_pipeline", **settings):
    path = settings_file(promote_command=f"{sys.executable} promote.py --candidate-from data/evaluate",
                         retry_delay_seconds=1, **settings)
    dag_env(LPR_PROJECT_DIR=project, LPR_AIRFLOW_CONFIG=path)
    bag = dagbag()
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def test_pipeline_runs_every_stage_with_one_run_id_and_the_run_s_params(
        airflow_db, dagbag, dag_env, dvc_project, settings_file, tmp_path):
    committed = (dvc_project / "params.yaml").read_text()
    release = tmp_path / "release"
    release.mkdir()
    (release / "urls.txt").write_text("http://127.0.0.1/x.jpg\n")
    dag = _build(dagbag, dag_env, dvc_project, settings_file)
    run = dag.test(run_conf={"params_overrides": {"train_encoder.train.lr": 0.003}, "data_url": str(release)})
    assert run.state == "success"
    records = _records(dvc_project)
    assert list(records) == list(STAGE_NAMES)
    for name, r in records.items():
        assert r["LPR_PIPELINE_RUN_ID"] == run.run_id, name
        assert json.loads(r["LPR_PARAMS_OVERRIDES"]) == {"train_encoder.train.lr": 0.003}, name
        assert r["LPR_DATA_URL"] == str(release), name
        assert r["lr"] == 0.003, name  # the first task applied the overrides to the checkout's params.yaml
        assert r["cwd"] == str(dvc_project)
    assert (dvc_project / "data" / "lpr4m" / "urls.txt").read_text() == "http://127.0.0.1/x.jpg\n"
    promoted = json.loads((dvc_project / "promoted.json").read_text())
    assert promoted == {"run_id": run.run_id, "args": ["--candidate-from", "data/evaluate"]}
    # Every stage is recorded by DVC: a second `dvc repro` has nothing to do.
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=dvc_project, capture_output=True,
                            text=True, check=True)
    assert "up to date" in status.stdout.lower(), status.stdout
    # the next run starts from the committed params.yaml: no override of an earlier run leaks into it
    # (a fresh parse, as a worker makes: dag.test() leaves the rendered templates on the tasks)
    run = dagbag().dags["lpr_pipeline"].test()
    assert run.state == "success"
    assert (dvc_project / "params.yaml").read_text() == committed


def test_a_bad_override_fails_the_first_task_naming_the_key(
        airflow_db, dagbag, dag_env, dvc_project, settings_file, capfd):
    dag = _build(dagbag, dag_env, dvc_project, settings_file)
    run = dag.test(run_conf={"params_overrides": {"train_encoder.train.lr": "fast"}})
    task_log = "".join(capfd.readouterr())  # the task's output, as its log holds it
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["configure_run"] == "failed"
    assert all(states[n] == "upstream_failed" for n in STAGE_NAMES)
    assert 'train_encoder.train.lr: expected a number like the current 0.001, got "fast"' in task_log
    assert _records(dvc_project) == {}


def test_a_failing_stage_stops_the_run_and_says_where_its_logs_are(
        airflow_db, dagbag, dag_env, dvc_project, settings_file, monkeypatch, caplog):
    monkeypatch.setenv("LPR_FAIL_STAGE", "prepare")
    dag = _build(dagbag, dag_env, dvc_project, settings_file)
    with caplog.at_level(logging.ERROR, logger="lpr.pipeline"):
        run = dag.test()
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["configure_run"] == states["download"] == states["validate"] == "success"
    assert states["prepare"] == "failed"
    assert all(states[n] == "upstream_failed" for n in STAGE_NAMES[3:]) and states["promote"] == "upstream_failed"
    assert list(_records(dvc_project)) == ["download", "validate"]
    assert not (dvc_project / "promoted.json").exists()
    messages = [r.getMessage() for r in caplog.records if r.name == "lpr.pipeline"]
    (message,) = [m for m in messages if "stage 'prepare' failed" in m]
    assert run.run_id in message and "task log file:" in message and "task_id=prepare" in message


def test_promote_dag_runs_the_configured_gate_command(airflow_db, dagbag, dag_env, dvc_project, settings_file):
    dag = _build(dagbag, dag_env, dvc_project, settings_file, dag_id="lpr_promote",
                 promote_version_command=f"{sys.executable} promote.py --version {{{{ params.version }}}}",
                 rollback_command=f"{sys.executable} promote.py --rollback")
    run = dag.test(run_conf={"action": "promote", "version": "4"})
    assert run.state == "success"
    assert json.loads((dvc_project / "promoted.json").read_text())["args"] == ["--version", "4"]
    run = dag.test(run_conf={"action": "rollback"})
    assert run.state == "success"
    assert json.loads((dvc_project / "promoted.json").read_text()) == {"run_id": run.run_id, "args": ["--rollback"]}
