"""The promotion lock with a PostgreSQL backend store (what a cluster runs): promoters racing over
HTTP through an ``mlflow server`` on PostgreSQL and directly on the database, and the database's
own advisory lock."""

import math
import multiprocessing as mp
import os
import signal
import sys
from dataclasses import dataclass

import pytest

from lpr_core.tracking.lock import LockTimeout, database_lock
from tests.tracking.helpers import (
    check_race_outcome,
    free_port,
    hold_database_lock,
    postgres_available,
    postgres_server,
    race,
    register_dummy,
    server_process,
    wait_for_file,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries are not installed")]


@dataclass(frozen=True)
class Backend:
    database: str  # postgresql://... of the backend store
    url: str  # the tracking server on it


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-pg")
    with postgres_server() as database:
        port = free_port()
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "2", "--backend-store-uri", database, "--artifacts-destination", str(root / "artifacts")]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        url = f"http://127.0.0.1:{port}"
        with server_process(cmd, f"{url}/health", root / "server.log", env=env, cwd=root, timeout_s=300):
            yield Backend(database, url)


def test_the_advisory_lock_excludes_and_dies_with_its_holder(backend, tmp_path):
    name = "lpr-encoder-advisory"
    ready = tmp_path / "ready"
    holder = mp.get_context("spawn").Process(target=hold_database_lock, args=(backend.database, name, str(ready)))
    holder.start()
    try:
        assert wait_for_file(ready, proc=holder).startswith("pg_advisory_lock(")
        with pytest.raises(LockTimeout, match="advisory lock"), database_lock(backend.database, name, wait_s=0.5):
            pass
        with database_lock(backend.database, "another-model", wait_s=0.5):
            pass  # one lock per model
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    # the server drops a dead client's session, and its lock with it
    with database_lock(backend.database, name, wait_s=30) as what:
        assert what.startswith("pg_advisory_lock(")


@pytest.mark.slow
def test_promoters_over_http_and_on_the_database_leave_one_champion_the_best(backend):
    """Three promoters over HTTP (pods) and two on the database (a lab machine with database
    access), released at once: one champion, the best; the history complete; every decision
    recorded, each against the champion the previous one left."""
    name = "lpr-encoder-race-pg"
    scores = {register_dummy(backend.url, name, s): s for s in (0.42, 0.61, math.nan, 0.55, 0.37)}
    uris = [backend.url, backend.url, backend.database, backend.url, backend.database]
    verdicts = race([(uri, name, v) for uri, v in zip(uris, scores)])
    assert set(verdicts) == set(scores)
    tags = check_race_outcome(backend.url, name, scores)
    waited = sorted(float(t["gate.lock_waited_s"]) for t in tags.values())
    assert waited[-2] > 0.1, f"the promoters never queued for the lock: {waited}"
