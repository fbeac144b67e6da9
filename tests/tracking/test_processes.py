"""Processes the ``lpr`` command starts end with it: ``lpr ui`` and the rescoring of ``lpr promote``,
each stopped with SIGTERM while its children run, leave no descendant alive."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from lpr_core import cli
from lpr_core.tracking import registry
from lpr_core.tracking.gate import GateConfig
from lpr_core.tracking.lock import lock_model_name
from tests.tracking.helpers import (
    REPO,
    free_port,
    make_project,
    stop_group,
    tracking_uri_restored,
    wait_for_file,
    write_candidate,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def survivors(procs, timeout_s: float = 20.0) -> list[str]:
    """The processes of ``procs`` still alive after ``timeout_s`` (zombies count as ended: nothing
    may reap an orphan in a container)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {' '.join(p.cmdline())[:160]}")
            except psutil.Error:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def lpr(args, cwd, env, log):
    """Start ``lpr <args>`` as a user would, in its own session (so this test can always clean up)."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "lpr_core.cli", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def test_lpr_ui_stopped_with_sigterm_stops_the_mlflow_server_and_its_workers(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PYTHONPATH": str(REPO), "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    proc = lpr(["ui", "--port", str(port)], tmp_path, env, tmp_path / "ui.log")
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "ui.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "lpr ui did not answer"
            time.sleep(0.5)
        family = descendants(proc.pid)
        assert len(family) >= 2, [p.cmdline() for p in family]  # the mlflow command and its server
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        left = survivors(family)
        assert not left, f"lpr ui left these running: {left}"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        stop_group(proc, grace_s=2)
        for p in descendants(proc.pid):
            p.kill()


# a stand-in for the index_gallery stage of dvc.yaml: it runs until stopped and starts a child of its own
SLOW_STAGE = textwrap.dedent("""
    import json, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    json.dump({"stage": __import__("os").getpid(), "child": child.pid}, open("rescoring.json", "w"))
    time.sleep(600)
""")


@pytest.fixture
def rescoring_project(tmp_path, monkeypatch):
    """A champion scored on old data, a candidate on new data: ``lpr promote`` must rescore."""
    with tracking_uri_restored():
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        make_project(tmp_path)
        (tmp_path / "stage.py").write_text(SLOW_STAGE)
        (tmp_path / "dvc.yaml").write_text(
            "stages:\n  index_gallery:\n    cmd: python stage.py --encoder models/encoder --out data/index\n"
            "  evaluate:\n    cmd: python stage.py --encoder models/encoder --out data/evaluate\n")
        cand = write_candidate(tmp_path, 0.4, dv="old")
        assert cli.main(["promote", "--candidate-from", str(cand)]) == 0
        write_candidate(tmp_path, 0.5, dv="new")
        yield tmp_path


def test_lpr_promote_stopped_while_rescoring_stops_the_stage_and_releases_the_lock(rescoring_project):
    root = rescoring_project
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = lpr(["promote", "--candidate-from", "data/evaluate"], root, env, root / "promote.log")
    try:
        pids = json.loads(wait_for_file(root / "rescoring.json", timeout_s=300))
        family = descendants(proc.pid)
        assert {pids["stage"], pids["child"]} <= {p.pid for p in family}, [p.cmdline() for p in family]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, (root / "promote.log").read_text()[-3000:]
        left = survivors(family)
        assert not left, f"lpr promote left these running: {left}"
    finally:
        stop_group(proc, grace_s=2)
    # nothing was decided, and the lock is free for the next promoter
    cfg = GateConfig()
    client = registry._client(os.environ["MLFLOW_TRACKING_URI"])
    versions = {str(mv.version): mv.tags for mv in client.search_model_versions(f"name = '{cfg.model_name}'")}
    assert len(versions) == 2 and "gate.decision" not in versions["2"]
    assert registry.alias_version(registry.CHAMPION, cfg, os.environ["MLFLOW_TRACKING_URI"]) == "1"
    assert client.search_model_versions(f"name = '{lock_model_name(cfg.model_name)}'") == []
