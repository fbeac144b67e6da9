"""Helpers shared by the tracking tests: a tiny project with an encoder, candidates, server processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def save_tiny_encoder(path: Path, seed: int = 0) -> Path:
    """A tiny encoder (embed_dim 16, 32 px, T = 2) with weights drawn from ``seed``."""
    import torch

    from lpr_core.models.encoder import EncoderConfig, build_encoder, save_encoder

    torch.manual_seed(seed)
    enc = build_encoder(EncoderConfig(backbone="resnet10", backbone_width=8, image_size=32, num_frames=2,
                                      embed_dim=16, pmd=False, pfr=False, aggregator="transformer", dropout=0.0))
    return save_encoder(enc, path)


def make_project(root: Path) -> Path:
    """Put the project's params.yaml and a tiny saved encoder (embed_dim 16) in ``root``."""
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    save_tiny_encoder(root / "models/encoder/encoder.pt")
    return root


_trained = {"n": 0}


def write_candidate(root: Path, rank1: float, small: float = 0.5, dv: str = "d1", ok: bool = True,
                    new_model: bool = True) -> Path:
    """Write ``data/evaluate/candidate.json`` as the evaluate stage does; return its directory.

    Each candidate gets new encoder weights (as a new training run would) unless ``new_model`` is
    False (the same model evaluated again)."""
    if new_model:
        _trained["n"] += 1
        save_tiny_encoder(root / "models/encoder/encoder.pt", seed=_trained["n"])
    out = root / "data/evaluate"
    out.mkdir(parents=True, exist_ok=True)
    (out / "candidate.json").write_text(json.dumps({
        "encoder": str(root / "models/encoder/encoder.pt"), "detector": None,
        "metrics": {"test/rank1": rank1, "test/scale_type/small/rank1": small},
        "data_version": dv, "validation_passed": ok,
    }))
    return out


@contextlib.contextmanager
def tracking_uri_restored() -> Iterator[None]:
    """Give MLflow's process-wide tracking URI back afterwards (``configure`` sets it for good)."""
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def server_process(cmd: Sequence[str], health_url: str, log: Path, *, env: Mapping[str, str] | None = None,
                   cwd: Path | None = None, timeout_s: float = 180.0) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own process group until ``health_url`` answers 200; stop the whole group after.

    MLflow's server forks uvicorn (and job consumers), so the group, not just the pid, is stopped.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=dict(env or os.environ),
                                cwd=cwd, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd[:4])} exited with {proc.returncode} before {health_url} "
                                   f"answered; log {log}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(health_url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{health_url} did not answer within {timeout_s:.0f} s; log {log}:\n{_tail(log)}")
            time.sleep(0.5)
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL what is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# ------------------------------------------------------------------------------------- promotion races


def register_dummy(uri: str, name: str, score: float | None, dv: str = "d1", *, slices: Mapping[str, float] | None = None,
                   sha: str | None = None) -> str:
    """Register a stand-in model (a run artifact with an ``MLmodel`` file) with the given scores;
    the version's content does not matter to the gate, only its tags. Works on a server too."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from lpr_core.tracking import registry
    from lpr_core.tracking.gate import GateConfig

    client = MlflowClient(uri, uri)
    exp = client.get_experiment_by_name("lpr-registry-tests")
    # a database store keeps artifacts beside the database (never in the working directory)
    location = (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri() if uri.startswith("sqlite:///") else None
    exp_id = exp.experiment_id if exp else client.create_experiment("lpr-registry-tests", artifact_location=location)
    run = client.create_run(exp_id)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "MLmodel").write_text("flavors: {}\n")
        client.log_artifacts(run.info.run_id, tmp, "model")
    client.set_terminated(run.info.run_id)
    metrics = {} if score is None else {"test/rank1": score}
    metrics.update(slices or {})
    extra = {registry.MODEL_SHA_TAG: sha} if sha else None
    return registry.register_candidate(f"{run.info.artifact_uri}/model", metrics, dv, True,
                                       cfg=GateConfig(model_name=name), run_id=run.info.run_id, tracking_uri=uri,
                                       extra_tags=extra)


def promote_after_barrier(uri: str, name: str, version: str, barrier, results, ttl_s: float = 30.0) -> None:
    """Worker of a race (run in its own process): wait for every promoter, then promote."""
    from lpr_core.tracking import registry
    from lpr_core.tracking.gate import GateConfig

    barrier.wait(timeout=300)
    decision = registry.promote(version, GateConfig(model_name=name, lock_ttl_s=ttl_s), tracking_uri=uri)
    results.put((version, decision.promote))


def race(jobs: Sequence[tuple[str, str, str]], timeout_s: float = 400.0) -> dict[str, bool]:
    """Run ``promote_after_barrier`` for each ``(uri, name, version)`` in its own spawned process, all
    released at once; return their verdicts by version (a promoter that fails fails the race)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(jobs)), ctx.Queue()
    procs = [ctx.Process(target=promote_after_barrier, args=(uri, name, v, barrier, results)) for uri, name, v in jobs]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(max(1.0, deadline - time.monotonic()))
        codes = [p.exitcode for p in procs]
        assert codes == [0] * len(procs), f"promoters exited with {codes}"
        return dict(results.get(timeout=10) for _ in procs)
    finally:
        for p in procs:
            p.kill()


def check_race_outcome(uri: str, name: str, scores: Mapping[str, float | None], *, first: str | None = None) -> dict:
    """Assert what a race of promotions must leave, whatever the order the lock gave them.

    ``scores`` maps each raced version to its headline score (None: no score); ``first`` is the
    champion before the race. Checks: exactly one champion, the best finite score; every decision
    recorded with a distinct lock ticket; in ticket order, each decision was judged against the
    champion the previous one left (so decisions were serialised) and promoted exactly when its
    score was finite and higher; ``lpr.champion_history`` lists every promotion in that order and
    ends with the champion, ``previous-champion`` before it. Returns the decisions' tags by version.
    """
    import math

    from mlflow.tracking import MlflowClient

    from lpr_core.tracking import registry
    from lpr_core.tracking.gate import GateConfig

    client = MlflowClient(uri, uri)
    cfg = GateConfig(model_name=name)
    tags = {v: client.get_model_version(name, v).tags for v in scores}
    for v, t in tags.items():
        assert t.get("gate.decision") in ("promoted", "refused"), f"v{v} has no recorded decision: {t}"
    tickets = {v: int(t["gate.lock_ticket"]) for v, t in tags.items()}
    assert len(set(tickets.values())) == len(tickets), f"two decisions under one lock ticket: {tickets}"

    def finite(x):
        return x is not None and math.isfinite(x)

    champ, champ_score = first, None
    if first is not None:
        champ_score = float(client.get_model_version(name, first).tags["metric.test/rank1"])
    promoted = []
    for v in sorted(scores, key=tickets.get):
        t = tags[v]
        assert t.get("gate.champion_version") == champ, (
            f"v{v} (ticket {tickets[v]}) was judged against v{t.get('gate.champion_version')}, but the champion "
            f"then was v{champ}: the promotions were not serialised")
        should = finite(scores[v]) and (champ_score is None or scores[v] > champ_score)
        assert (t["gate.decision"] == "promoted") is should, (v, scores[v], champ_score, t["gate.reason"])
        if should:
            champ, champ_score = v, scores[v]
            promoted.append(v)
    best = max((v for v in scores if finite(scores[v])), key=lambda v: scores[v])
    if first is None or scores[best] > float(client.get_model_version(name, first).tags["metric.test/rank1"]):
        assert champ == best
    assert registry.alias_version(registry.CHAMPION, cfg, uri) == champ
    history = registry._history(client, cfg)
    assert history == ([first] if first else []) + promoted, history
    previous = registry.alias_version(registry.PREVIOUS, cfg, uri)
    assert previous == (history[-2] if len(history) > 1 else None)
    for v, s in scores.items():
        if not finite(s):
            assert tags[v]["gate.decision"] == "refused" and v not in history
    # the lock is free again: no live ticket left behind
    from lpr_core.tracking.lock import lock_model_name

    assert client.search_model_versions(f"name = '{lock_model_name(name)}'") == []
    return tags


def hold_lock(uri: str, name: str, ttl_s: float, ready: str, hold_s: float = 3600.0) -> None:
    """Worker: take the registry lock of ``name``, write ``ready`` (the ticket), hold for ``hold_s``.

    Killed with SIGKILL it leaves a stale ticket; stopped with SIGSTOP it stops renewing it; left
    alone it renews it and finally releases it.
    """
    from mlflow.tracking import MlflowClient

    from lpr_core.tracking.lock import RegistryLock

    with RegistryLock(MlflowClient(uri, uri), name, purpose="test holder", ttl_s=ttl_s) as lock:
        Path(ready).write_text(str(lock.ticket))
        time.sleep(hold_s)


def wait_for_file(path: Path, timeout_s: float = 120.0, proc=None) -> str:
    """The content of ``path`` once it exists (a worker's signal), or a failure after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc is not None and proc.exitcode is not None:
            raise AssertionError(f"the worker exited with {proc.exitcode} before writing {path}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout_s:.0f} s")
        time.sleep(0.1)
    return path.read_text()


def embed_request(image_path: Path) -> dict:
    """The request a retrieval service sends for one shop image: ``{"image": <base64 JPEG>}``."""
    import base64

    return {"image": base64.b64encode(Path(image_path).read_bytes()).decode("ascii")}


# ------------------------------------------------------------------------------------------- PostgreSQL

def _pg_bin() -> Path:
    """Where PostgreSQL's server binaries are: ``initdb`` on ``PATH``, else Debian's
    ``/usr/lib/postgresql/<version>/bin`` (the packages put only the client tools on ``PATH``)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else Path("/usr/lib/postgresql/bin")


PG_BIN = _pg_bin()


def postgres_available() -> bool:
    """Whether PostgreSQL's server binaries are installed (``initdb``, ``postgres``)."""
    return (PG_BIN / "initdb").exists() and (PG_BIN / "postgres").exists()


@contextlib.contextmanager
def postgres_server(database: str = "mlflow", timeout_s: float = 120.0) -> Iterator[str]:
    """A throw-away PostgreSQL server on a free loopback port; yields the URI of ``database``.

    ``initdb`` and ``postgres`` refuse to run as root: as root, the cluster belongs to ``nobody``
    and the server runs as that user (its directory is made with ``mkdtemp`` and handed over).
    """
    import tempfile

    import psycopg2

    root = Path(tempfile.mkdtemp(prefix="lpr-pg-"))
    as_user: dict = {}
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "LANG": "C", "HOME": str(root)}
    data, log, port = root / "data", root / "postgres.log", free_port()
    subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "lpr", "-A", "trust", "-E", "UTF8",
                    "--locale=C", "--no-sync"], check=True, capture_output=True, cwd=root, env=env, **as_user)
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                                 "-k", str(root), "-c", "fsync=off", "-c", "max_connections=200"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True,
                                **as_user)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="lpr", dbname="postgres")
                break
            except psycopg2.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start; log {log}:\n{_tail(log)}") from None
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {database}")
        conn.close()
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the lock has psycopg2
        yield f"postgresql+psycopg2://lpr@127.0.0.1:{port}/{database}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # fast shutdown: open sessions are cut
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_group(proc, grace_s=1)
        shutil.rmtree(root, ignore_errors=True)


def hold_database_lock(uri: str, name: str, ready: str) -> None:
    """Worker: hold the database lock of ``name`` (``uri`` a database) until killed."""
    from lpr_core.tracking.lock import database_lock

    with database_lock(uri, name, wait_s=60) as what:
        Path(ready).write_text(str(what))
        time.sleep(3600)
