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


def make_project(root: Path) -> Path:
    """Put the project's params.yaml and a tiny saved encoder (embed_dim 16) in ``root``."""
    from lpr_core.models.encoder import EncoderConfig, build_encoder, save_encoder

    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    enc = build_encoder(EncoderConfig(backbone="resnet10", backbone_width=8, image_size=32, num_frames=2,
                                      embed_dim=16, pmd=False, pfr=False))
    save_encoder(enc, root / "models/encoder/encoder.pt")
    return root


def write_candidate(root: Path, rank1: float, small: float = 0.5, dv: str = "d1", ok: bool = True) -> Path:
    """Write ``data/evaluate/candidate.json`` as the evaluate stage does; return its directory."""
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
