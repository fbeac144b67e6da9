"""Airflow test set-up: a private AIRFLOW_HOME, the repository's DAG folder, tiny DVC projects.

Airflow reads its configuration when it is first imported, so the environment is set here, at
collection time, before any test module imports it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
GIT_ID = ("-c", "user.name=lpr-tests", "-c", "user.email=lpr-tests@example.invalid", "-c", "commit.gpgsign=false")
STAGE_NAMES = ("download", "validate", "prepare", "train_detector", "train_encoder", "index_gallery", "evaluate")

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="lpr-airflow-home-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, True)
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_AIRFLOW_HOME / "logs"),
    "GX_ANALYTICS_ENABLED": "false",
})
# The DAG processor puts the DAG folder on sys.path; the DAG files import their helper package from it.
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))

#: A stage of the tiny project: records its inputs, the run id, the run's trigger params and the
#: learning rate params.yaml holds, so tests can check what each stage saw. LPR_FAIL_STAGE=<name>
#: makes that stage fail.
STAGE_SCRIPT = textwrap.dedent('''\
    import json, os, sys
    from pathlib import Path
    import yaml
    name, out, inputs = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    if os.environ.get("LPR_FAIL_STAGE") == name:
        sys.exit(f"stage {name}: failing on purpose (LPR_FAIL_STAGE)")
    for i in inputs:
        if not Path(i).exists():
            sys.exit(f"stage {name}: missing input {i}")
    out.mkdir(parents=True, exist_ok=True)
    record = {k: os.environ.get(k) for k in ("LPR_PIPELINE_RUN_ID", "LPR_PARAMS_OVERRIDES", "LPR_DATA_URL")}
    record.update(stage=name, inputs=inputs, cwd=os.getcwd(),
                  lr=yaml.safe_load(Path("params.yaml").read_text())["train_encoder"]["train"]["lr"])
    (out / "record.json").write_text(json.dumps(record))
''')


def _dvc_yaml(python: str) -> str:
    lines = ["stages:"]
    previous = None
    for name in STAGE_NAMES:
        deps = ["stage.py"] + ([f"data/{previous}"] if previous else ["urls.txt"])
        inputs = f" data/{previous}/record.json" if previous else ""
        lines += [
            f"  {name}:",
            f"    cmd: {python} stage.py {name} data/{name}{inputs}",
            f"    deps: [{', '.join(deps)}]",
            f"    outs: [data/{name}]",
        ]
        previous = name
    return "\n".join(lines) + "\n"


def make_project(root: Path, *, git_dvc: bool = True) -> Path:
    """A tiny DVC project with the pipeline's seven stage names, each a cheap script, and the project's
    ``params.yaml`` (committed, with everything else, when ``git_dvc``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "stage.py").write_text(STAGE_SCRIPT)
    (root / "urls.txt").write_text("http://127.0.0.1/never-fetched.jpg\n")
    (root / "dvc.yaml").write_text(_dvc_yaml(sys.executable))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "promote.py").write_text(
        "import json, os, sys\nfrom pathlib import Path\n"
        "Path('promoted.json').write_text(json.dumps({'run_id': os.environ.get('LPR_PIPELINE_RUN_ID'),"
        " 'args': sys.argv[1:]}))\n")
    if git_dvc:
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
        subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=root, check=True)
        subprocess.run(["git", *GIT_ID, "add", "-A"], cwd=root, check=True)
        subprocess.run(["git", *GIT_ID, "commit", "-qm", "tiny project"], cwd=root, check=True)
    return root


@pytest.fixture
def settings_file(tmp_path):
    """Write an ``LPR_AIRFLOW_CONFIG`` file from keyword values; returns its path."""
    import yaml

    def write(**values) -> Path:
        path = tmp_path / "lpr_airflow.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    return write


@pytest.fixture(scope="session")
def stage_names() -> tuple[str, ...]:
    """The stage names of the tiny project, in order (the pipeline's seven stages)."""
    return STAGE_NAMES


@pytest.fixture
def project(tmp_path) -> Path:
    """A tiny project directory with a dvc.yaml (no git, no DVC: enough for parsing)."""
    return make_project(tmp_path / "project", git_dvc=False)


@pytest.fixture
def dvc_project(tmp_path) -> Path:
    """A tiny git + DVC project whose seven stages run in well under a second each."""
    return make_project(tmp_path / "project", git_dvc=True)


@pytest.fixture(scope="session")
def airflow_db():
    """``airflow db migrate`` once per session, in the private AIRFLOW_HOME."""
    proc = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(DAGS)])})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return _AIRFLOW_HOME


@pytest.fixture
def dag_env(monkeypatch):
    """Set the DAG settings' environment for one test; returns a setter."""
    for key in ("LPR_RUNNER", "LPR_PROJECT_DIR", "LPR_AIRFLOW_CONFIG", "LPR_PROMOTE_COMMAND", "LPR_IMAGE",
                "LPR_PIPELINE_RUN_ID", "LPR_PARAMS_OVERRIDES", "LPR_DATA_URL"):
        monkeypatch.delenv(key, raising=False)

    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, str(value))

    return set_env


@pytest.fixture
def dagbag():
    """Build a DagBag of the repository's DAG folder (as the DAG processor does) when called."""
    from airflow.dag_processing.dagbag import DagBag

    return lambda: DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def real_tiny_project(tmp_path_factory, request):
    """The real pipeline on the tiny world (``tests/pipeline/project.py``, shared with the pipeline
    tests): a copy of the session's project after its first ``dvc repro``, with every stage after
    ``download`` forgotten (lock entries and run cache), so a DAG run executes them again while the
    download, minutes of HTTP on a small machine, stays cached."""
    from tests.pipeline.project import fresh_copy

    project = fresh_copy(tmp_path_factory, request, "dag-real-world", reproduced_state=True)
    project.forget_stages_after("download")
    return project
