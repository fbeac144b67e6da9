"""``dag.test()`` of ``lpr_pipeline`` (local runner) on the real pipeline and the tiny world.

The project is the real ``dvc.yaml`` / ``params.yaml`` (shrunk) of ``tests/pipeline/project.py``;
its download is cached, every later stage runs for real, then ``promote`` runs the real registry
gate (``lpr promote --candidate-from data/evaluate`` with this interpreter) against the project's
own MLflow store.
"""

from __future__ import annotations

import sys
import time

import pytest

from tests.pipeline.project import STAGES

pytestmark = pytest.mark.slow


def test_dag_runs_the_real_stages_and_gate_with_one_run_id(
        airflow_db, dagbag, dag_env, settings_file, real_tiny_project, monkeypatch):
    from mlflow.tracking import MlflowClient

    project = real_tiny_project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.tracking_uri)
    for key in ("LPR_MLFLOW_EXPERIMENT", "LPR_PIPELINE_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    settings = settings_file(promote_command=f"{sys.executable} -m lpr_core.cli promote --candidate-from data/evaluate",
                             retry_delay_seconds=1)
    dag_env(LPR_PROJECT_DIR=project.root, LPR_AIRFLOW_CONFIG=settings)
    bag = dagbag()
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["lpr_pipeline"]
    assert [t.task_id for t in dag.tasks] == ["configure_run", *STAGES, "promote"]

    t0 = time.perf_counter()
    run = dag.test(run_conf={"params_overrides": {"train_encoder.train.lr": 0.002}})
    print(f"\ndag.test() of lpr_pipeline on the tiny world (download cached): {time.perf_counter() - t0:.1f} s")
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert states == {"configure_run": "success", **{s: "success" for s in STAGES}, "promote": "success"}

    # every stage after the cached download ran once, tagged with the Airflow run id
    runs = project.stage_runs()
    assert [r.data.tags["lpr.stage"] for r in runs] == list(STAGES[1:])
    assert {r.data.tags["lpr.pipeline_run_id"] for r in runs} == {run.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    # every stage run records the run's trigger params; the overridden value is the one that trained
    assert {r.data.tags["lpr.params_overrides"] for r in runs} == {'{"train_encoder.train.lr": 0.002}'}
    assert {r.data.tags["lpr.data"] for r in runs} == {"data/lpr4m"}
    (encoder,) = [r for r in runs if r.data.tags["lpr.stage"] == "train_encoder"]
    assert float(encoder.data.params["train_encoder.train.lr"]) == 0.002
    assert set(project.lock()) == set(STAGES)
    assert "up to date" in project.dvc("status").output

    # the real gate registered the evaluated model in the project's registry and made it champion
    client = MlflowClient(tracking_uri=project.tracking_uri)
    (version,) = client.search_model_versions("name='lpr-encoder'")
    assert version.tags["lpr.pipeline_run_id"] == run.run_id
    assert version.tags["gate.decision"] == "promoted"
    assert version.tags["lpr.validation_passed"] == "true"
    assert client.get_model_version_by_alias("lpr-encoder", "champion").version == version.version
    register = client.get_run(version.run_id)
    assert register.data.tags["lpr.pipeline_run_id"] == run.run_id
