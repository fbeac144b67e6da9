"""Airflow for real on loopback: api-server + scheduler + dag-processor, lpr_pipeline triggered over REST.

Everything runs in a private AIRFLOW_HOME on a free port; every process started here (and its
children) is ended in ``finally``, and every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"

START_TIMEOUT_S = 180
RUN_TIMEOUT_S = 360


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _airflow_env(home: Path, port: int, password_file: Path, project: Path, settings: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    base = f"http://127.0.0.1:{port}"
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "lpr:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
        "LPR_PROJECT_DIR": str(project),
        "LPR_AIRFLOW_CONFIG": str(settings),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(DAGS)]),
        "GX_ANALYTICS_ENABLED": "false",
    })
    return env


class Services:
    """The Airflow processes of one test; :meth:`stop` ends them and every child they started."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env, self.home = env, home
        self.procs: list[subprocess.Popen] = []

    def start(self, *command: str) -> None:
        log = open(self.home / f"{command[0]}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen([sys.executable, "-m", "airflow", *command], env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        import psutil

        family = []
        for p in self.procs:
            try:
                family += psutil.Process(p.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # its own session: the process and its children
        deadline = time.monotonic() + 30
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        _, alive = psutil.wait_procs(family, timeout=5)
        for child in alive:  # a task process that left the session
            child.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in self.home.glob("*.log"))


def _wait(what: str, check, timeout: float, services: Services):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in services.procs:
            assert p.poll() is None, f"{p.args[3]} exited with {p.returncode} while waiting for {what}\n{services.logs()}"
        result = check()
        if result:
            return result
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{services.logs()}")


def test_airflow_runs_lpr_pipeline_triggered_through_the_rest_api(tmp_path, dvc_project, settings_file, stage_names):
    import httpx

    home = tmp_path / "airflow-home"
    home.mkdir()
    password = secrets.token_urlsafe(16)
    (home / "passwords.json").write_text(json.dumps({"lpr": password}))
    settings = settings_file(promote_command=f"{sys.executable} promote.py --candidate-from data/evaluate")
    port = _free_port()
    env = _airflow_env(home, port, home / "passwords.json", dvc_project, settings)
    t0 = time.monotonic()
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    services = Services(env, home)
    try:
        services.start("api-server", "--host", "127.0.0.1", "--port", str(port))
        services.start("scheduler")
        services.start("dag-processor")
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

        def healthy():
            try:
                return client.get("/api/v2/monitor/health").status_code == 200
            except httpx.TransportError:
                return False

        _wait("the api-server", healthy, START_TIMEOUT_S, services)
        assert client.post("/auth/token", json={"username": "lpr", "password": "wrong"}).status_code == 401
        response = client.post("/auth/token", json={"username": "lpr", "password": password})
        assert response.status_code in (200, 201), response.text
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        _wait("lpr_pipeline to be parsed", lambda: client.get("/api/v2/dags/lpr_pipeline").status_code == 200,
              START_TIMEOUT_S, services)
        assert client.patch("/api/v2/dags/lpr_pipeline", json={"is_paused": False}).status_code == 200
        started = time.monotonic() - t0

        bad = client.post("/api/v2/dags/lpr_pipeline/dagRuns", json={"logical_date": None, "conf": {"seed": -1}})
        assert bad.status_code == 400, bad.text
        response = client.post("/api/v2/dags/lpr_pipeline/dagRuns",
                               json={"logical_date": None, "conf": {"seed": 5, "world_size": "tiny"}})
        assert response.status_code == 200, response.text
        run_id = response.json()["dag_run_id"]

        def finished():
            state = client.get(f"/api/v2/dags/lpr_pipeline/dagRuns/{run_id}").json()["state"]
            return state if state in ("success", "failed") else None

        state = _wait(f"run {run_id}", finished, RUN_TIMEOUT_S, services)
        tis = client.get(f"/api/v2/dags/lpr_pipeline/dagRuns/{run_id}/taskInstances").json()["task_instances"]
        assert state == "success", ({t["task_id"]: t["state"] for t in tis}, services.logs())
        assert sorted(t["task_id"] for t in tis) == sorted([*stage_names, "promote"])
        for name in stage_names:
            record = json.loads((dvc_project / "data" / name / "record.json").read_text())
            assert record["LPR_PIPELINE_RUN_ID"] == run_id and record["LPR_SEED"] == "5"
        assert json.loads((dvc_project / "promoted.json").read_text())["run_id"] == run_id
        print(f"airflow up in {started:.0f} s; run {run_id} took {time.monotonic() - t0 - started:.0f} s")
    finally:
        services.stop()
    assert all(p.poll() is not None for p in services.procs)
