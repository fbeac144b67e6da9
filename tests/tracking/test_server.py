"""The promotion gate against a real ``mlflow server`` process on loopback (the lab/production setup).

Models are logged through the server's artifact proxy, registered in its registry, and the
``champion`` / ``previous-champion`` aliases are moved by ``lpr promote`` and ``lpr rollback``.
"""

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lpr_core import cli
from lpr_core.tracking import registry
from lpr_core.tracking.gate import GateConfig
from tests.tracking.helpers import (
    check_race_outcome,
    embed_request,
    free_port,
    make_project,
    race,
    register_dummy,
    server_process,
    tracking_uri_restored,
    write_candidate,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Server:
    url: str
    root: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free loopback port with a sqlite store and proxied artifacts; stopped after."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts")]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job consumers
    url = f"http://127.0.0.1:{port}"
    with server_process(cmd, f"{url}/health", root / "server.log", env=env, cwd=root):
        yield Server(url, root)


@pytest.fixture
def project(mlflow_server, tmp_path, monkeypatch):
    """A project whose stages and ``lpr`` commands talk to the server."""
    with tracking_uri_restored():
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        # an earlier test may have set MLflow's process-wide URI, which wins over the environment
        import mlflow

        mlflow.set_tracking_uri(mlflow_server.url)
        yield make_project(tmp_path)


def test_gate_promotes_refuses_and_rolls_back_on_a_server(mlflow_server, project, capsys):
    import mlflow

    cfg = GateConfig()
    client = registry._client()

    # the first valid candidate becomes champion
    cand = write_candidate(project, 0.40)
    assert cli.main(["promote", "--candidate-from", str(cand)]) == 0
    assert "PROMOTED" in capsys.readouterr().out
    assert mlflow.get_tracking_uri() == mlflow_server.url
    v1 = registry.alias_version(registry.CHAMPION, cfg)
    assert v1 is not None
    tags = client.get_model_version(cfg.model_name, v1).tags
    assert tags["gate.decision"] == "promoted" and tags["metric.test/rank1"] == "0.400000"
    # the model went through the server's artifact proxy into its artifact destination
    stored = list((mlflow_server.root / "artifacts").rglob("encoder.pt"))
    assert stored, f"no encoder.pt under {mlflow_server.root / 'artifacts'}"
    register_run = client.get_run(tags["lpr.register_run_id"])
    assert register_run.data.tags["lpr.stage"] == "register"

    # a worse candidate is refused, with the decision and its evidence recorded on the version
    write_candidate(project, 0.30)
    assert cli.main(["promote", "--candidate-from", str(cand), "--fail-on-refuse"]) == 3
    assert "REFUSED" in capsys.readouterr().out
    v2 = str(int(v1) + 1)
    tags = client.get_model_version(cfg.model_name, v2).tags
    assert tags["gate.decision"] == "refused"
    assert tags["gate.champion_version"] == v1
    assert tags["gate.delta"] == "-0.100000"
    assert tags["gate.candidate_score"] == "0.300000" and tags["gate.champion_score"] == "0.400000"
    assert "does not beat" in tags["gate.reason"] and "gate.time" in tags
    assert registry.alias_version(registry.CHAMPION, cfg) == v1

    # a better one is promoted; the old champion becomes previous-champion
    write_candidate(project, 0.55)
    assert cli.main(["promote", "--candidate-from", str(cand), "--fail-on-refuse"]) == 0
    v3 = registry.alias_version(registry.CHAMPION, cfg)
    assert v3 == str(int(v1) + 2)
    assert registry.alias_version(registry.PREVIOUS, cfg) == v1
    assert client.get_model_version(cfg.model_name, v3).tags["gate.delta"] == "+0.150000"

    # the champion alias serves a working model, downloaded through the server
    import numpy as np
    import pandas as pd
    from PIL import Image

    img = project / "x.jpg"
    Image.new("RGB", (40, 30), (10, 200, 10)).save(img)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.model_name}@{registry.CHAMPION}")
    emb = np.asarray(model.predict(pd.DataFrame([embed_request(img)])))
    assert emb.shape == (1, 16)

    # lpr rollback restores the previous champion and marks the rolled-back version
    assert cli.main(["rollback"]) == 0
    assert f"from v{v3} to v{v1}" in capsys.readouterr().out
    assert registry.alias_version(registry.CHAMPION, cfg) == v1
    assert registry.alias_version(registry.PREVIOUS, cfg) is None
    assert "gate.rolled_back" in client.get_model_version(cfg.model_name, v3).tags
    assert cli.main(["rollback"]) == 2
    assert "no previous champion" in capsys.readouterr().err


@pytest.mark.slow
def test_promoters_racing_over_http_leave_one_champion_the_best(mlflow_server):
    """Five promoters in separate processes (pods reach MLflow only over HTTP), released at once,
    candidates of different scores, one NaN and one without a score: the promotion lock serialises
    them through the server; exactly one champion, the best; the history complete; every decision
    recorded."""
    url, name = mlflow_server.url, "lpr-encoder-race-http"
    scores = {register_dummy(url, name, s): s for s in (0.31, 0.58, 0.47, math.nan, None)}
    verdicts = race([(url, name, v) for v in scores])
    assert set(verdicts) == set(scores)
    tags = check_race_outcome(url, name, scores)
    waited = sorted(float(t["gate.lock_waited_s"]) for t in tags.values())
    assert waited[-2] > 0.1, f"the promoters never queued for the lock: {waited}"
