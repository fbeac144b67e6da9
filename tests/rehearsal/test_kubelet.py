"""The kubelet stand-in's pure parts: image paths mapped to a pod's folders, the environment from secrets,
the DAG's task order, and the promoters' candidates."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from components import podspec
from tests.rehearsal import candidate, checks, kubelet, scheduler


@pytest.fixture
def pod() -> dict:
    return podspec.stage_pod("train_encoder", podspec.load_runtime(), run_id="r1")


def test_every_mount_and_the_image_project_get_a_folder_of_the_pod_but_shared_memory(pod, tmp_path):
    mapping = kubelet.path_map(pod, tmp_path)
    assert set(mapping) == {"/opt/lpr", "/workspace", "/tmp", "/home/lpr"}
    assert all(folder.parent == tmp_path for folder in mapping.values())
    assert len(set(mapping.values())) == len(mapping)


def test_values_are_mapped_by_whole_path_components(tmp_path):
    mapping = {"/opt/lpr": tmp_path / "opt", "/tmp": tmp_path / "tmp", "/home/lpr": tmp_path / "home"}
    assert kubelet.map_value("/opt/lpr", mapping) == str(tmp_path / "opt")
    assert kubelet.map_value("/opt/lpr/dvc.yaml", mapping) == str(tmp_path / "opt" / "dvc.yaml")
    assert kubelet.map_value("/opt/lprx", mapping) == "/opt/lprx"  # another folder
    assert kubelet.map_value("/opt/lpr:/usr/bin", mapping) == f"{tmp_path / 'opt'}:/usr/bin"
    assert kubelet.map_value("/tmpfoo/x", mapping) == "/tmpfoo/x"
    assert kubelet.map_value("s3://b/tmp", mapping) == "s3://b/tmp"  # not a path
    assert kubelet.map_value("--run-id", mapping) == "--run-id"


def test_the_locked_environment_is_never_mapped_even_under_an_image_path(tmp_path, monkeypatch):
    # a clone under /tmp holds its .venv there: the pods' PATH must still reach its interpreter
    monkeypatch.setattr(kubelet, "INSTALLED", ("/tmp/clone/.venv",))
    mapping = {"/tmp": tmp_path / "tmp", "/opt/lpr": tmp_path / "opt"}
    assert kubelet.map_value("/tmp/clone/.venv/bin:/tmp/x:/usr/bin", mapping) == \
        f"/tmp/clone/.venv/bin:{tmp_path / 'tmp' / 'x'}:/usr/bin"
    assert kubelet.map_value("/tmp/clone/.venvx", mapping) == str(tmp_path / "tmp" / "clone" / ".venvx")


def test_the_environment_takes_values_and_secret_keys_and_leaves_optional_missing_keys_unset(pod):
    (container,) = pod["spec"]["containers"]
    secrets = {"lpr-dvc-remote": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s",
                                  "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}}
    env = kubelet.resolve_env(container, secrets)
    assert env["AWS_ACCESS_KEY_ID"] == "id" and env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert "AWS_SESSION_TOKEN" not in env and "MLFLOW_TRACKING_PASSWORD" not in env  # optional, absent
    assert env["LPR_RUNS_URL"] == podspec.load_runtime().env["LPR_RUNS_URL"]


def test_a_required_secret_key_that_is_missing_stops_the_pod_and_env_from_takes_every_key():
    required = {"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "TOKEN"}}}]}
    with pytest.raises(kubelet.PodSpecError, match="TOKEN"):
        kubelet.resolve_env(required, {"s": {}})
    both = {"envFrom": [{"secretRef": {"name": "s"}, "prefix": "S_"}], "env": [{"name": "S_A", "value": "mine"}]}
    assert kubelet.resolve_env(both, {"s": {"A": "1", "B": "2"}}) == {"S_A": "mine", "S_B": "2"}
    with pytest.raises(kubelet.PodSpecError, match="not found"):
        kubelet.resolve_env({"envFrom": [{"secretRef": {"name": "gone"}}]}, {})


def test_the_user_is_the_containers_then_the_pods(pod):
    assert kubelet.pod_user(pod) == (1000, 1000)
    pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 1234
    assert kubelet.pod_user(pod) == (1234, 1000)


def test_tasks_run_after_everything_upstream_of_them():
    def task(tid, *up):
        return SimpleNamespace(task_id=tid, upstream_task_ids=set(up))

    tasks = [task("promote", "evaluate"), task("evaluate", "index", "detector"), task("index", "prepare"),
             task("detector", "prepare"), task("prepare")]
    assert scheduler.task_order(tasks) == ["prepare", "index", "detector", "evaluate", "promote"]
    with pytest.raises(ValueError, match="cycle"):
        scheduler.task_order([task("a", "b"), task("b", "a")])


def test_stage_executions_count_dvc_s_own_line_not_the_pod_log_s_echo():
    log = ("Running stage 'download':\nlpr pod: Running stage 'download':\n"
           "Stage 'validate' is cached - skipping run, checking out outputs\n")
    assert checks.executions([log, "Running stage 'prepare':\n"]) == {"download": 1, "prepare": 1}
    assert checks.restorations([log]) == {"validate": 1}
    assert checks.verdicts("m v3: REFUSED: worse\nm v4: PROMOTED to champion: better\n") == [
        ("m", "3", "REFUSED"), ("m", "4", "PROMOTED to champion")]


def test_a_candidate_without_a_score_has_no_headline_and_nan_stays_nan():
    assert "test/rank1" not in candidate.candidate(Path("e.pt"), candidate.parse_score("none"))["metrics"]
    record = json.loads(json.dumps(candidate.candidate(Path("e.pt"), candidate.parse_score("nan"))))
    assert math.isnan(record["metrics"]["test/rank1"])
