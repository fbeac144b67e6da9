"""``python -m components.pod``: pods in workspaces of their own, sharing only a DVC remote and the exchange.

A toy project stands for the image: three stages (``download`` reads ``data/lpr4m``, ``validate``,
``prepare`` reads the ``toy`` params), a ``params.yaml``, a DVC remote. Each pod is a fresh copy
of it, as each pod on a cluster starts from the image; a log outside the workspaces counts how
often each stage's command did its work.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components import pod
from components.orchestration import RUN_ID_ENV, TRIGGER_ENV

REPO = Path(__file__).resolve().parents[2]

STAGE = """\
import json, os, sys
from pathlib import Path
import yaml
name, out, inputs = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
out.mkdir(parents=True, exist_ok=True)
record = {"stage": name, "inputs": [Path(i).read_text() for i in inputs],
          "scale": yaml.safe_load(Path("params.yaml").read_text())["toy"]["scale"],
          "env": {k: os.environ.get(k) for k in ("LPR_PIPELINE_RUN_ID", "LPR_PARAMS_OVERRIDES", "LPR_DATA_URL")}}
(out / "record.json").write_text(json.dumps(record))
with open(os.environ["TOY_LOG"], "a") as log:
    log.write(name + "\\n")
"""
DVC_YAML = """\
stages:
  download:
    cmd: python stage.py download data/download data/lpr4m/urls.txt
    deps: [stage.py, data/lpr4m]
    outs: [data/download]
  validate:
    cmd: python stage.py validate data/validate data/download/record.json
    deps: [stage.py, data/download]
    outs: [data/validate]
  prepare:
    cmd: python stage.py prepare data/prepared data/download/record.json data/validate/record.json
    deps: [stage.py, data/download, data/validate]
    params: [toy.scale]
    outs: [data/prepared]
"""
STAGES = ("download", "validate", "prepare")


def _dvc(cwd, *args, env=None):
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def make_image(root: Path, remote: str, env: dict | None = None, track_data: bool = True) -> Path:
    """The toy checkout a pod image would hold: code, dvc.yaml, params.yaml, data/lpr4m.dvc, no data."""
    root.mkdir(parents=True)
    (root / "stage.py").write_text(STAGE)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text("# toy params\ntoy:\n  scale: 1  # the result-bearing knob\n")
    _dvc(root, "init", "-q", "--no-scm")
    _dvc(root, "config", "core.analytics", "false")
    _dvc(root, "remote", "add", "-d", "store", remote)
    if track_data:
        (root / "data" / "lpr4m").mkdir(parents=True)
        (root / "data" / "lpr4m" / "urls.txt").write_text("http://127.0.0.1/a.jpg\n")
        _dvc(root, "add", "-q", "data/lpr4m")
        _dvc(root, "push", "-q", env=env)
        shutil.rmtree(root / "data" / "lpr4m")
        shutil.rmtree(root / ".dvc" / "cache")
    return root


class Pods:
    """Runs ``python -m components.pod`` the way a pod does: a fresh copy of the image each time."""

    def __init__(self, tmp_path: Path, image: Path, runs_url: str, env: dict | None = None) -> None:
        self.tmp, self.image, self.log = tmp_path, image, tmp_path / "ran.log"
        self.env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO), "TOY_LOG": str(self.log),
                    "LPR_RUNS_URL": runs_url}
        for key in (RUN_ID_ENV, *TRIGGER_ENV.values()):
            self.env.pop(key, None)
        self.count = 0

    def run(self, *args: str, workdir: Path | None = None) -> subprocess.CompletedProcess:
        self.count += 1
        if workdir is None:
            workdir = Path(shutil.copytree(self.image, self.tmp / f"pod{self.count}", symlinks=True))
        return subprocess.run([sys.executable, "-m", "components.pod", *args], cwd=workdir, env=self.env,
                              capture_output=True, text=True, timeout=300)

    def stage(self, stage: str, run_id: str, **options: str) -> subprocess.CompletedProcess:
        args = ["run", stage, "--run-id", run_id]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", value]
        proc = self.run(*args)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    def ran(self) -> list[str]:
        ran = self.log.read_text().split() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return ran


# --- units -----------------------------------------------------------------------------------------

def test_overrides_are_a_json_object_or_nothing():
    assert pod.parse_overrides("") == {} and pod.parse_overrides(None) == {}
    assert pod.parse_overrides('{"a.b": 1}') == {"a.b": 1}
    for bad, message in (("[1]", "JSON object"), ("{nope", "not JSON"), ('"x"', "JSON object")):
        with pytest.raises(pod.PodError, match=message) as exc:
            pod.parse_overrides(bad)
        assert exc.value.code == 2
    inputs = pod.RunInputs("r1", {"b": 2, "a": 0.5}, "s3://x/y")
    assert inputs.overrides_json == '{"a":0.5,"b":2}'
    assert inputs.environment() == {RUN_ID_ENV: "r1", TRIGGER_ENV["params_overrides"]: '{"a":0.5,"b":2}',
                                    TRIGGER_ENV["data_url"]: "s3://x/y"}


def test_the_stage_runs_record_what_the_pods_export():
    """The MLflow tags of every stage run read the variables the orchestrators set."""
    from lpr_core.tracking import run as tracking_run

    assert tracking_run.PARAMS_OVERRIDES_ENV == TRIGGER_ENV["params_overrides"]
    assert tracking_run.DATA_URL_ENV == TRIGGER_ENV["data_url"]


def test_lineage_tags_carry_the_trigger_params(tmp_path, monkeypatch):
    from lpr_core.tracking.run import lineage_tags

    monkeypatch.setenv(TRIGGER_ENV["params_overrides"], '{"train_encoder.train.lr":0.003}')
    monkeypatch.setenv(TRIGGER_ENV["data_url"], "s3://bucket/lpr4m")
    tags = lineage_tags("prepare", tmp_path)
    assert tags["lpr.params_overrides"] == '{"train_encoder.train.lr":0.003}' and tags["lpr.data"] == "s3://bucket/lpr4m"
    monkeypatch.setenv(TRIGGER_ENV["data_url"], "")
    assert lineage_tags("prepare", tmp_path)["lpr.data"] == "data/lpr4m"
    monkeypatch.delenv(TRIGGER_ENV["data_url"])
    monkeypatch.delenv(TRIGGER_ENV["params_overrides"])
    assert "lpr.data" not in lineage_tags("prepare", tmp_path)


def test_workspace_is_a_copy_of_the_checkout_without_data_or_caches(tmp_path):
    checkout = tmp_path / "opt-lpr"
    for rel in ("dvc.yaml", "params.yaml", "lpr_core/data/prepare.py", "lpr_core/__pycache__/x.pyc", ".git/HEAD",
                "data/lpr4m/urls.txt", ".dvc/config", ".dvc/cache/files/x", ".dvc/tmp/lock", "components/pod.py"):
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_text("[core]\n    analytics = false\n" if rel == ".dvc/config" else rel)
    work = tmp_path / "workspace"
    work.mkdir()
    assert pod.enter_workspace(work, checkout) == work.resolve()
    copied = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
    assert copied == [".dvc/config", ".dvc/config.local", ".dvc/tmp/.lpr-writable", "components/pod.py",
                      "dvc.yaml", "lpr_core/data/prepare.py", "params.yaml"]
    assert "no_scm = true" in (work / ".dvc" / "config.local").read_text()
    # a checkout already there (a rehearsal's workspace, a restarted container) is used as it is
    (work / "params.yaml").write_text("changed")
    pod.enter_workspace(work, checkout)
    assert (work / "params.yaml").read_text() == "changed"
    # a copy cut short (no dvc.yaml yet: it is copied last) is made again
    partial = tmp_path / "partial"
    (partial / "lpr_core").mkdir(parents=True)
    pod.enter_workspace(partial, checkout)
    assert (partial / "dvc.yaml").is_file() and (partial / "lpr_core/data/prepare.py").is_file()


def test_a_workspace_that_cannot_be_written_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(pod.PodError, match="not writable.*emptyDir") as exc:
        pod.enter_workspace(tmp_path / "file" / "work", tmp_path)
    assert exc.value.code == 2


def test_data_url_is_fetched_whole_into_the_folder(tmp_path):
    source = tmp_path / "release"
    (source / "sub").mkdir(parents=True)
    (source / "urls.txt").write_text("a\n")
    (source / "sub" / "b.json").write_text("{}")
    dest = tmp_path / "work" / "data" / "lpr4m"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("old")
    assert pod.fetch_data(str(source), dest) == 2
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == ["sub/b.json", "urls.txt"]
    assert [p.name for p in dest.parent.iterdir()] == ["lpr4m"]  # no temporary folder left
    with pytest.raises(pod.PodError, match="no such folder") as exc:
        pod.fetch_data(str(tmp_path / "missing"), tmp_path / "x")
    assert exc.value.code == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(pod.PodError, match="empty"):
        pod.fetch_data(str(tmp_path / "empty"), tmp_path / "y")


# --- pods for real ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_and_remote(tmp_path_factory):
    base = tmp_path_factory.mktemp("pods")
    return make_image(base / "image", str(base / "remote")), base / "remote"


@pytest.fixture
def pods(tmp_path, image_and_remote):
    """Pods of a fresh copy of the toy image, with a DVC remote and an exchange of their own."""
    image = Path(shutil.copytree(image_and_remote[0], tmp_path / "image", symlinks=True))
    shutil.copytree(image_and_remote[1], tmp_path / "remote")
    (image / ".dvc" / "config.local").write_text(f"['remote \"store\"']\n    url = {tmp_path / 'remote'}\n")
    return Pods(tmp_path, image, str(tmp_path / "runs"))


def _record(proc_or_pods: Pods, stage: str, run_id: str) -> dict:
    """What ``stage`` recorded, restored from the run's entry by a fresh pod (``exec --restore``)."""
    out = {"download": "data/download", "validate": "data/validate", "prepare": "data/prepared"}[stage]
    proc = proc_or_pods.run("exec", "--run-id", run_id, "--restore", stage, "--command", f"cat {out}/record.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_each_stage_works_once_per_run_and_its_record_reaches_the_next_pods(pods):
    overrides = '{"toy.scale": 3}'
    for stage in STAGES:
        pods.stage(stage, "run-1", params_overrides=overrides)
    assert pods.ran() == list(STAGES)  # every stage's command did its work exactly once
    prepared = _record(pods, "prepare", "run-1")
    assert prepared["scale"] == 3  # the overrides reached the stage through params.yaml
    assert prepared["env"] == {"LPR_PIPELINE_RUN_ID": "run-1", "LPR_PARAMS_OVERRIDES": '{"toy.scale":3}',
                               "LPR_DATA_URL": ""}
    assert json.loads(prepared["inputs"][0])["stage"] == "download"
    lock = yaml.safe_load(pods.run("lock", "--run", "run-1", workdir=pods.image).stdout)
    assert list(lock["stages"]) == list(STAGES)
    assert lock["stages"]["prepare"]["params"] == {"params.yaml": {"toy.scale": 3}}

    # a retried pod of a finished stage does nothing
    proc = pods.stage("download", "run-1")
    assert "already finished in run 'run-1'" in proc.stderr and pods.ran() == []

    # the next run with the same inputs restores every stage from the remote's run cache
    for stage in STAGES:
        pods.stage(stage, "run-2", params_overrides=overrides)
    assert pods.ran() == []
    assert _record(pods, "prepare", "run-2")["scale"] == 3

    # a changed result-bearing param reruns the stage that reads it, and only that one
    for stage in STAGES:
        pods.stage(stage, "run-3", params_overrides='{"toy.scale": 5}')
    assert pods.ran() == ["prepare"]
    assert _record(pods, "prepare", "run-3")["scale"] == 5


@pytest.mark.slow
def test_a_command_pod_restores_the_stage_with_the_outputs_it_read(pods):
    """The registry gate's pod reads the stage's outputs and what they point at (the trained models)."""
    for stage in STAGES:
        pods.stage(stage, "run-1")
    proc = pods.run("exec", "--run-id", "run-1", "--restore", "prepare", "--command",
                    "for f in prepared validate download; do cat data/$f/record.json; echo; done")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [json.loads(line)["stage"] for line in proc.stdout.splitlines()] == ["prepare", "validate", "download"]


@pytest.mark.slow
def test_a_pod_whose_upstream_has_not_finished_names_it(pods):
    pods.stage("download", "run-1")
    proc = pods.run("run", "prepare", "--run-id", "run-1")
    assert proc.returncode == 1
    assert "stage 'prepare' reads the outputs of validate, which published no dvc.lock entry in run 'run-1'" \
        in proc.stderr
    assert pods.ran() == ["download"]


@pytest.mark.slow
def test_bad_overrides_stop_the_pod_naming_the_key(pods):
    proc = pods.run("run", "download", "--run-id", "run-1", "--params-overrides", '{"toy.scael": 3}')
    assert proc.returncode == 2
    assert "toy.scael" in proc.stderr
    proc = pods.run("run", "download", "--run-id", "run-1", "--params-overrides", '{"toy.scale": "big"}')
    assert proc.returncode == 2 and "toy.scale" in proc.stderr
    assert pods.ran() == []


def test_a_pod_without_a_runs_url_says_what_to_set(pods):
    pods.env.pop("LPR_RUNS_URL")
    proc = pods.run("run", "download", "--run-id", "run-1")
    assert proc.returncode == 2 and "set LPR_RUNS_URL" in proc.stderr


@pytest.mark.slow
def test_configure_restores_the_committed_params_then_applies_the_overrides(tmp_path):
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "params.yaml").write_text("toy:\n  scale: 1  # knob\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "params"]):
        subprocess.run([*git, *args], cwd=work, check=True)
    (work / "params.yaml").write_text("toy:\n  scale: 7  # a previous run's override\n")
    source = tmp_path / "release"
    source.mkdir()
    (source / "urls.txt").write_text("x\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "components.pod", "configure", "--params-overrides",
                           '{"toy.scale": 2}', "--data-url", str(source)], cwd=work, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert (work / "params.yaml").read_text() == "toy:\n  scale: 2  # knob\n"
    assert (work / "data" / "lpr4m" / "urls.txt").read_text() == "x\n"
    proc = subprocess.run([sys.executable, "-m", "components.pod", "configure"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and (work / "params.yaml").read_text() == "toy:\n  scale: 1  # knob\n"


@pytest.mark.slow
@pytest.mark.integration
def test_pods_on_an_s3_object_store_with_the_run_s_data_from_a_url(tmp_path, s3):
    """The cluster's set-up: DVC remote, exchange and the run's data all in one S3 store."""
    import fsspec

    bucket = f"s3://{s3['BUCKET']}"
    image = make_image(tmp_path / "image", f"{bucket}/dvc", track_data=False)
    fs = fsspec.filesystem("s3")
    fs.pipe_file(f"{s3['BUCKET']}/releases/lpr4m/urls.txt", b"http://127.0.0.1/b.jpg\n")
    pods = Pods(tmp_path, image, f"{bucket}/runs", env=s3)
    for stage in STAGES:
        pods.stage(stage, "run-s3", data_url=f"{bucket}/releases/lpr4m")
    assert pods.ran() == list(STAGES)
    download = _record(pods, "download", "run-s3")
    assert download["inputs"] == ["http://127.0.0.1/b.jpg\n"]
    assert download["env"]["LPR_DATA_URL"] == f"{bucket}/releases/lpr4m"
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{s3['BUCKET']}/runs/run-s3")) == \
        sorted(f"{s}.lock.yaml" for s in STAGES)
    # without a data URL, a stage that reads data/lpr4m says how to provide it
    proc = pods.run("run", "download", "--run-id", "run-none")
    assert proc.returncode == 2 and "reads data/lpr4m" in proc.stderr and "data_url" in proc.stderr
