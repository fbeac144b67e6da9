"""MLflow stage runs against a real sqlite store in a temporary project."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lpr_core.tracking import lineage, run


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("project")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  download:\n    cmd: python -m lpr_core.stages.download\n"
        "    deps:\n    - path: urls\n      md5: abc.dir\n    outs:\n    - path: data/download\n      md5: def.dir\n"
    )
    return tmp_path


@pytest.fixture
def project(project_dir, monkeypatch):
    """One sqlite store per module (creating one costs seconds), a clean environment per test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(lineage.PIPELINE_RUN_ENV, "pipe-123")
    return project_dir


def test_flatten_nests_keys_and_stringifies():
    assert run.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": True}) == {"a.b": "1", "a.c.d": "[1, 2]", "e": "True"}


def test_tracking_uri_defaults_to_sqlite_in_project(project, monkeypatch):
    assert run.tracking_uri(project) == f"sqlite:///{project.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert run.tracking_uri(project) == "http://127.0.0.1:5000"


def test_stage_run_logs_params_metrics_tags_and_artifacts(project):
    from mlflow.tracking import MlflowClient

    artifact = project / "summary.json"
    artifact.write_text("{}")
    with run.stage_run("download", {"image_size": 128, "retry": {"attempts": 3}}, project_root=project) as sr:
        sr.log_metrics({"train/loss": 1.5}, step=0)
        sr.log_metrics({"train/loss": 1.0}, step=1)
        sr.log_artifact(artifact)
    client = MlflowClient(run.tracking_uri(project))
    r = client.get_run(sr.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params == {"image_size": "128", "retry.attempts": "3"}
    assert r.data.tags["lpr.stage"] == "download"
    assert r.data.tags["lpr.pipeline_run_id"] == "pipe-123"
    assert r.data.tags["lpr.data_version"] == lineage.data_version(project / "dvc.lock")
    assert r.data.tags["lpr.dvc_stage_inputs"] == lineage.stage_input_hash(project / "dvc.lock", "download")
    assert [m.value for m in client.get_metric_history(sr.run_id, "train/loss")] == [1.5, 1.0]
    assert [a.path for a in client.list_artifacts(sr.run_id)] == ["summary.json"]
    assert (project / "mlflow.db").exists()


def test_failed_stage_marks_run_failed(project):
    from mlflow.tracking import MlflowClient

    with pytest.raises(RuntimeError), run.stage_run("validate", {}, project_root=project) as sr:
        raise RuntimeError("gate failed")
    assert MlflowClient(run.tracking_uri(project)).get_run(sr.run_id).info.status == "FAILED"


def test_runs_of_one_pipeline_share_its_id(project, monkeypatch):
    import mlflow

    monkeypatch.setenv(lineage.PIPELINE_RUN_ENV, "pipe-other")
    with run.stage_run("download", {}, project_root=project) as other:
        pass
    monkeypatch.setenv(lineage.PIPELINE_RUN_ENV, "pipe-shared")
    ids = []
    for stage in ("download", "validate"):
        with run.stage_run(stage, {}, project_root=project) as sr:
            ids.append(sr.run_id)
    found = mlflow.search_runs(
        experiment_names=[run.DEFAULT_EXPERIMENT], filter_string="tags.`lpr.pipeline_run_id` = 'pipe-shared'"
    )
    assert set(found["run_id"]) == set(ids) and other.run_id not in set(found["run_id"])


def test_stage_input_hash_changes_with_deps(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text("stages:\n  s:\n    cmd: x\n    deps:\n    - path: a\n      md5: '1'\n")
    h1 = lineage.stage_input_hash(lock, "s")
    lock.write_text("stages:\n  s:\n    cmd: x\n    deps:\n    - path: a\n      md5: '2'\n")
    assert h1 != lineage.stage_input_hash(lock, "s")
    assert lineage.stage_input_hash(lock, "missing") is None
    assert lineage.stage_input_hash(tmp_path / "nope.lock", "s") is None


def test_pipeline_run_id_prefers_environment(monkeypatch):
    monkeypatch.setenv(lineage.PIPELINE_RUN_ENV, "from-env")
    assert lineage.pipeline_run_id() == "from-env"


def test_pipeline_run_id_outside_dvc_is_a_new_adhoc_id(monkeypatch):
    monkeypatch.delenv(lineage.PIPELINE_RUN_ENV, raising=False)
    monkeypatch.setattr(lineage, "_dvc_ancestor", lambda: None)
    first, second = lineage.pipeline_run_id(), lineage.pipeline_run_id()
    assert re.fullmatch(r"adhoc-[0-9a-f]{12}", first) and re.fullmatch(r"adhoc-[0-9a-f]{12}", second)
    assert first != second


# a process that looks like `dvc repro` to its stages: it runs two stage processes, like dvc does
FAKE_DVC = """#!{python}
import json, subprocess, sys
import psutil

me = psutil.Process()
code = "from lpr_core.tracking import lineage; print(lineage.pipeline_run_id())"
ids = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
       for _ in range(2)]
print(json.dumps({{"pid": me.pid, "created": me.create_time(), "ids": ids}}))
"""


def test_stages_of_one_dvc_process_get_the_id_of_that_process(tmp_path):
    """Under a bare ``dvc repro`` each stage derives the id from the ``dvc`` process that runs it:
    the stages of one run share it exactly (pid and start time), another run gets another."""
    script = tmp_path / "bin" / "dvc"
    script.parent.mkdir()
    script.write_text(FAKE_DVC.format(python=sys.executable))
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != lineage.PIPELINE_RUN_ENV}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    runs = [json.loads(subprocess.run([str(script), "repro"], env=env, capture_output=True, text=True,
                                      check=True).stdout) for _ in range(2)]
    for r in runs:
        assert r["ids"] == [f"dvc-{r['pid']}-{int(r['created'])}"] * 2, r
    assert runs[0]["ids"][0] != runs[1]["ids"][0]
