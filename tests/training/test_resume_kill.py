"""A real training process killed with SIGKILL after a checkpoint resumes to the exact weights of
an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from lpr_core.training.checkpoint import load_checkpoint
from lpr_core.training.engine import checkpoint_path

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import os, signal, sys
sys.path.insert(0, {tests!r})
import pyarrow.parquet as pq
from conftest import tiny_encoder_params
from lpr_core.data.datasets import ManifestImages
from lpr_core.training.checkpoint import seed_everything
from lpr_core.training.engine import fit
from lpr_core.training.tasks import build_encoder_task

root, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
params = tiny_encoder_params(max_steps=5, checkpoint_every=2)
seed_everything(0)
task = build_encoder_task(
    params,
    pq.read_table(os.path.join(root, "clips.parquet")),
    ManifestImages.from_download(root, "train", "frames"),
    ManifestImages.from_download(root, "train", "images"),
)

def hook(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

fit(task, params.train, out, on_step_end=hook)
"""


def _run(root: Path, out: Path, kill_at: int) -> int:
    code = CHILD.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code, str(root), str(out), str(kill_at)], env=env, timeout=600)
    return proc.returncode


@pytest.mark.slow
def test_sigkilled_run_resumes_to_identical_weights(tmp_path, tiny_world):
    root = tiny_world["root"]
    pq.write_table(tiny_world["clips"], root / "clips.parquet")
    assert _run(root, tmp_path / "reference", kill_at=-1) == 0
    # killed after step 3: the checkpoint of step 2 survives, step 3 is lost
    assert _run(root, tmp_path / "killed", kill_at=3) == -signal.SIGKILL
    assert load_checkpoint(checkpoint_path(tmp_path / "killed"))["step"] == 2
    assert not list((tmp_path / "killed" / "checkpoints").glob(".*tmp*"))  # no torn temp file left
    assert _run(root, tmp_path / "killed", kill_at=-1) == 0
    reference = load_checkpoint(checkpoint_path(tmp_path / "reference"))
    resumed = load_checkpoint(checkpoint_path(tmp_path / "killed"))
    assert resumed["step"] == reference["step"] == 5
    for name, value in reference["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    for a, b in zip(reference["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
