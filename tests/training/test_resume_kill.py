"""A real training process killed with SIGKILL in the middle of a checkpoint save keeps its previous
checkpoint intact and resumes from it to the exact weights of an uninterrupted run.

The kill is made to land during the save, deterministically: the child process stalls inside its
second save (:mod:`tests.training.stall`: the temporary file written, cut short, not yet renamed)
and the test kills it once it sees that temporary file and the stall's cue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from lpr_core.training.checkpoint import load_checkpoint
from lpr_core.training.engine import checkpoint_path

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import os, sys
sys.path.insert(0, {tests!r})
import pyarrow.parquet as pq
from conftest import tiny_encoder_params
from lpr_core.data.datasets import ManifestImages
from lpr_core.training.checkpoint import seed_everything
from lpr_core.training.engine import fit
from lpr_core.training.tasks import build_encoder_task
import stall

root, out, stall_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
if stall_at:
    stall.install(stall_at, notify=os.path.join(os.path.dirname(out), "stalled"))
params = tiny_encoder_params(max_steps=5, checkpoint_every=2)
seed_everything(0)
task = build_encoder_task(
    params,
    pq.read_table(os.path.join(root, "clips.parquet")),
    ManifestImages.from_download(root, "train", "frames"),
    ManifestImages.from_download(root, "train", "images"),
)
result = fit(task, params.train, out)
print("resumed_from", result.resumed_from)
"""


def _start(root: Path, out: Path, stall_at: int) -> subprocess.Popen:
    code = CHILD.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code, str(root), str(out), str(stall_at)], env=env,
                            stdout=subprocess.PIPE, text=True)


def _temp_files(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    return sorted(folder.glob(".last.pt.tmp-*")) if folder.is_dir() else []


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_save_keeps_the_previous_checkpoint_and_resumes_exactly(tmp_path, tiny_world):
    root = tiny_world["root"]
    pq.write_table(tiny_world["clips"], root / "clips.parquet")
    reference = _start(root, tmp_path / "reference", stall_at=0)
    assert reference.wait(timeout=600) == 0

    # checkpoints at steps 2, 4, 5: the save of step 4 stalls half-written
    killed = tmp_path / "killed"
    proc = _start(root, killed, stall_at=2)
    deadline = time.monotonic() + 300
    while not (checkpoint_path(killed).exists() and _temp_files(killed) and (tmp_path / "stalled").exists()):
        assert proc.poll() is None, "the training process ended before its second save"
        assert time.monotonic() < deadline, "no second checkpoint save seen"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.stdout.close()

    # the kill landed inside the save: its temporary file is there, torn; last.pt is the step-2 one
    (torn,) = _temp_files(killed)
    assert 0 < torn.stat().st_size < checkpoint_path(killed).stat().st_size
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(torn)
    assert load_checkpoint(checkpoint_path(killed))["step"] == 2

    rerun = _start(root, killed, stall_at=0)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0
    assert "resumed_from 2" in out
    assert _temp_files(killed) == []  # the next save removed the killed writer's leftover
    ref = load_checkpoint(checkpoint_path(tmp_path / "reference"))
    resumed = load_checkpoint(checkpoint_path(killed))
    assert resumed["step"] == ref["step"] == 5
    for name, value in ref["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    for a, b in zip(ref["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
