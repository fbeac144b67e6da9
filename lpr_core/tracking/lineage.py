"""Lineage facts that tie the runs of one pipeline together: pipeline run id, git commit, data version."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import psutil
import yaml

PIPELINE_RUN_ENV = "LPR_PIPELINE_RUN_ID"


def pipeline_run_id() -> str:
    """The id shared by every stage of one pipeline run.

    Taken from ``$LPR_PIPELINE_RUN_ID`` (set by ``lpr demo`` and the Airflow DAG); under a bare
    ``dvc repro`` the id is derived from the ``dvc`` process that runs the stages (its pid and start
    time), so all stages of one ``dvc repro`` share it. A new random id otherwise.
    """
    env = os.environ.get(PIPELINE_RUN_ENV)
    if env:
        return env
    dvc_proc = _dvc_ancestor()
    if dvc_proc is not None:
        pid, started = dvc_proc
        return f"dvc-{pid}-{int(started)}"
    return f"adhoc-{uuid.uuid4().hex[:12]}"


def _dvc_ancestor() -> tuple[int, float] | None:
    try:
        proc = psutil.Process().parent()
        for _ in range(6):
            if proc is None:
                return None
            cmd = " ".join(proc.cmdline()[:3])
            if "dvc" in Path(proc.cmdline()[0]).name or " dvc " in f" {cmd} " or "/dvc " in cmd:
                return proc.pid, proc.create_time()
            proc = proc.parent()
    except (psutil.Error, IndexError):
        return None
    return None


def git_commit(root: str | Path = ".") -> str | None:
    """The commit of the checkout at ``root`` (suffixed ``-dirty`` with uncommitted changes), or None."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def dvc_lock_stage(lock_path: str | Path, stage: str) -> dict | None:
    """The entry of ``stage`` in ``dvc.lock``, or None when the lock or the stage is absent."""
    path = Path(lock_path)
    if not path.exists():
        return None
    lock = yaml.safe_load(path.read_text()) or {}
    return (lock.get("stages") or {}).get(stage)


def stage_input_hash(lock_path: str | Path, stage: str) -> str | None:
    """A short hash of a stage's recorded deps and params in ``dvc.lock`` (what DVC compares)."""
    entry = dvc_lock_stage(lock_path, stage)
    if entry is None:
        return None
    inputs = {"deps": entry.get("deps", []), "params": entry.get("params", {}), "cmd": entry.get("cmd")}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def data_version(lock_path: str | Path, stage: str = "download") -> str | None:
    """The version of the data: a short hash of the outputs of ``stage`` recorded in ``dvc.lock``."""
    entry = dvc_lock_stage(lock_path, stage)
    if entry is None:
        return None
    outs = sorted((o.get("path", ""), o.get("md5", "")) for o in entry.get("outs", []))
    return hashlib.sha256(json.dumps(outs).encode()).hexdigest()[:16]
