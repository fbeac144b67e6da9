"""The README's Airflow command for real: ``dags/standalone.sh`` (what ``make airflow`` runs), then the
README's REST trigger example, run as written, against it.

The script is started the way a user of a fresh clone starts it: the environment is *not* on
``PATH`` (the old command failed there: ``airflow standalone`` starts its components as ``airflow``
from ``PATH``). Everything runs in a private ``AIRFLOW_HOME`` on a free port; every process started
here (and its children) is ended in ``finally``, and every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"

START_TIMEOUT_S = 300
RUN_TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readme_rest_example() -> str:
    """The bash block of the README that follows the ``rest-trigger-example`` marker, as written."""
    text = (REPO / "README.md").read_text()
    marker = text.index("<!-- rest-trigger-example")
    match = re.search(r"```bash\n(.*?)\n\s*```", text[marker:], re.S)
    assert match, "README.md: no bash block after the rest-trigger-example marker"
    return textwrap.dedent(match.group(1))


class Standalone:
    """``dags/standalone.sh`` in its own session; :meth:`stop` ends it and every child it started."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env, self.home = env, home
        self.log = home / "standalone.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        out = open(self.log, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(["bash", str(DAGS / "standalone.sh")], env=self.env, cwd=REPO, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        import psutil

        if self.proc is None:
            return
        try:
            family = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # standalone stops its components on Ctrl-C
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(family, timeout=10)
        for child in alive:  # a component or task process that outlived it
            child.kill()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""


def _wait(what: str, check, timeout: float, server: Standalone):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"standalone exited with {server.proc.returncode} waiting for {what}\n" \
                                           f"{server.logs()}"
        result = check()
        if result:
            return result
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{server.logs()}")


def test_the_readme_command_and_rest_example_run_lpr_pipeline_with_params_overrides(
        tmp_path, dvc_project, settings_file, stage_names):
    import httpx

    home = tmp_path / "airflow-home"
    home.mkdir()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    settings = settings_file(promote_command=f"{sys.executable} promote.py --candidate-from data/evaluate")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LPR_"))}
    env.update({
        "PATH": "/usr/local/bin:/usr/bin:/bin",  # a fresh shell: the environment is not activated
        "LPR_VENV": str(Path(sys.executable).parent.parent),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "LPR_PROJECT_DIR": str(dvc_project),
        "LPR_AIRFLOW_CONFIG": str(settings),
        # this checkout's code (a fresh clone's environment has the project installed in it)
        "PYTHONPATH": os.pathsep.join([str(REPO), str(DAGS)]),
        "GX_ANALYTICS_ENABLED": "false",
    })
    assert subprocess.run(["bash", "-c", "command -v airflow"], env=env, capture_output=True).returncode != 0
    server = Standalone(env, home)
    t0 = time.monotonic()
    try:
        server.start()
        client = httpx.Client(base_url=base, timeout=90)

        def healthy():
            try:
                return client.get("/api/v2/monitor/health").status_code == 200
            except httpx.TransportError:
                return False

        _wait("the api-server", healthy, START_TIMEOUT_S, server)
        password_file = home / "simple_auth_manager_passwords.json.generated"
        _wait("the admin password", password_file.exists, 60, server)
        token = client.post("/auth/token", json={"username": "admin",
                                                 "password": json.loads(password_file.read_text())["admin"]})
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        _wait("lpr_pipeline to be parsed", lambda: client.get("/api/v2/dags/lpr_pipeline").status_code == 200,
              START_TIMEOUT_S, server)
        started = time.monotonic() - t0
        pool = client.get("/api/v2/pools/lpr_promote")
        assert pool.status_code == 200 and pool.json()["slots"] == 1, pool.text

        # a misspelt key is refused when the run is created, naming the key
        bad = client.post("/api/v2/dags/lpr_pipeline/dagRuns",
                          json={"logical_date": None, "conf": {"params_overrides": {"train_encoder.train.lrr": 1.0}}})
        assert bad.status_code == 400 and "train_encoder.train.lrr" in bad.text, bad.text

        # the README's example, as written
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_rest_example()], cwd=tmp_path,
                              env={**env, "AIRFLOW": base}, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        run_id = proc.stdout.strip().splitlines()[-1]
        assert run_id.startswith("manual__"), proc.stdout

        def finished():
            try:
                state = client.get(f"/api/v2/dags/lpr_pipeline/dagRuns/{run_id}").json()["state"]
            except httpx.TransportError:  # a busy machine: the api-server answers late; ask again
                return None
            return state if state in ("success", "failed") else None

        state = _wait(f"run {run_id}", finished, RUN_TIMEOUT_S, server)
        run = client.get(f"/api/v2/dags/lpr_pipeline/dagRuns/{run_id}").json()
        tis = client.get(f"/api/v2/dags/lpr_pipeline/dagRuns/{run_id}/taskInstances").json()["task_instances"]
        assert state == "success", ({t["task_id"]: t["state"] for t in tis}, server.logs())
        assert run["conf"]["params_overrides"] == {"train_encoder.train.lr": 0.003}
        assert sorted(t["task_id"] for t in tis) == sorted(["configure_run", *stage_names, "promote"])
        assert {t["task_id"]: t["pool"] for t in tis}["promote"] == "lpr_promote"

        # the first task applied the overrides (its log says what changed), and every stage saw them
        log = client.get(f"/api/v2/dags/lpr_pipeline/dagRuns/{run_id}/taskInstances/configure_run/logs/1",
                         params={"full_content": True})
        assert log.status_code == 200, log.text
        text = json.dumps(log.json()["content"])
        assert "params.yaml: changed train_encoder.train.lr: 0.001 -> 0.003" in text, text[-3000:]
        for name in stage_names:
            record = json.loads((dvc_project / "data" / name / "record.json").read_text())
            assert record["LPR_PIPELINE_RUN_ID"] == run_id and record["lr"] == 0.003, name
            assert json.loads(record["LPR_PARAMS_OVERRIDES"]) == {"train_encoder.train.lr": 0.003}, name
        assert json.loads((dvc_project / "promoted.json").read_text())["run_id"] == run_id
        print(f"airflow standalone up in {started:.0f} s; run {run_id} took {time.monotonic() - t0 - started:.0f} s")
    finally:
        server.stop()
    assert server.proc.poll() is not None
