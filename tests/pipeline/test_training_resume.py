"""Training restarts the way users and pods run it: ``dvc repro`` killed with SIGKILL, then run again.

On copies of the session's reproduced tiny project, ``train_encoder`` is lengthened to 12 steps
(a checkpoint every 3) and:

- on one machine, ``dvc repro train_encoder`` is SIGKILLed (the ``dvc`` process and the stage, as a
  pod's are) after its first checkpoint in ``.lpr/state``; ``dvc repro`` again resumes from it;
- across workspaces sharing an S3 state root (moto's real S3 API), a first workspace's stage is
  SIGKILLed while it saves its second checkpoint (:mod:`tests.training.stall`), and a second
  workspace, a retried pod, resumes from the first checkpoint in the store;

and both end with the weights of an uninterrupted run (a third workspace with its own state).
Runtime settings are shown not to rerun the stage (``dvc status``).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.pipeline.objectstore import apply_env, new_bucket, s3_env
from tests.pipeline.project import TinyProject, fresh_copy
from tests.training.stall import ENV as STALL_ENV
from tests.training.stall import NOTIFY_ENV, SITE

pytestmark = [pytest.mark.slow, pytest.mark.integration]

STEPS, EVERY = 12, 3
ENCODER = "data/models/encoder/encoder.pt"


def lengthen(project: TinyProject) -> None:
    project.set_param("train_encoder.train.max_steps", STEPS)
    project.set_param("train_encoder.train.checkpoint_every", EVERY)


def weights(project: TinyProject) -> dict[str, torch.Tensor]:
    return torch.load(project.root / ENCODER, weights_only=True)["state_dict"]


def summary(project: TinyProject) -> dict:
    return json.loads((project.root / "data/models/encoder/train_summary.json").read_text())


def start_repro(project: TinyProject, log: Path, **env: str) -> subprocess.Popen:
    """``dvc repro train_encoder`` in its own process group (what a pod's kill takes down whole)."""
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train_encoder"], cwd=project.root,
                                env={**project.env(), **env}, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_for(proc: subprocess.Popen, log: Path, ready, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"dvc repro ended before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.05)


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for name, value in a.items():
        assert torch.equal(value, b[name]), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory, request) -> dict[str, torch.Tensor]:
    """The weights of an uninterrupted 12-step run, in a workspace and state root of its own."""
    project = fresh_copy(tmp_path_factory, request, "resume-reference", reproduced_state=True)
    lengthen(project)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LPR_STATE_URL", str(project.root.parent / "state"))
        project.dvc("repro", "train_encoder")
    assert summary(project)["resumed_from"] is None and summary(project)["steps"] == STEPS
    return weights(project)


def test_dvc_repro_killed_after_a_checkpoint_resumes_it(tmp_path_factory, request, tmp_path, monkeypatch, reference):
    monkeypatch.delenv("LPR_STATE_URL", raising=False)  # the default: .lpr/state in the project
    project = fresh_copy(tmp_path_factory, request, "resume-local", reproduced_state=True)
    lengthen(project)
    state = project.root / ".lpr" / "state" / "train_encoder"
    log = tmp_path / "killed.log"
    proc = start_repro(project, log)
    wait_for(proc, log, lambda: list(state.glob("*/checkpoints/last.pt")), "a first checkpoint")
    kill_group(proc)
    (ckpt,) = state.glob("*/checkpoints/last.pt")
    saved = torch.load(ckpt, weights_only=True)["step"]
    assert EVERY <= saved < STEPS
    assert not (project.root / ENCODER).exists()

    again = project.dvc("repro", "train_encoder")
    print(f"\nkilled at a checkpoint of step {saved}; the rerun took {again.seconds:.1f} s")
    assert again.ran == ["train_encoder"]
    assert "train_encoder: resuming the checkpoint" in again.output
    done = summary(project)
    assert done["resumed_from"] == saved > 0 and done["steps"] == STEPS
    assert_same_weights(weights(project), reference)
    assert not list(state.glob("*/checkpoints/last.pt"))  # spent, removed with its folder
    assert "up to date" in project.dvc("status", "train_encoder").output

    # runtime settings are not DVC params: no rerun; a result-bearing one is
    project.set_param("train_encoder.train.num_workers", 2)
    project.set_param("train_encoder.train.progress", True)
    project.set_param("train_encoder.train.checkpoint_every", 5)
    assert "up to date" in project.dvc("status", "train_encoder").output
    project.set_param("train_encoder.train.lr", 0.002)
    assert "modified" in project.dvc("status", "train_encoder").output


def test_a_pod_killed_while_saving_is_resumed_by_another_workspace_from_the_object_store(
        tmp_path_factory, request, tmp_path, monkeypatch, reference):
    import fsspec

    env = apply_env(monkeypatch, s3_env())
    root = f"s3://{new_bucket(env)}/lpr-state"
    monkeypatch.setenv("LPR_STATE_URL", root)
    first = fresh_copy(tmp_path_factory, request, "resume-pod1", reproduced_state=True)
    lengthen(first)
    stalled = tmp_path / "stalled"
    log = tmp_path / "pod1.log"
    proc = start_repro(first, log, **{STALL_ENV: "2", NOTIFY_ENV: str(stalled),
                                      "PYTHONPATH": os.pathsep.join([SITE, os.environ.get("PYTHONPATH", "")])})
    wait_for(proc, log, stalled.exists, "the second checkpoint save")
    work = first.root / ".lpr" / "work" / "train_encoder"
    (temp,) = work.glob("*/checkpoints/.last.pt.tmp-*")  # the save in progress, torn
    kill_group(proc)

    fs, _ = fsspec.core.url_to_fs(root)
    fs.invalidate_cache()
    (stored,) = fs.glob(f"{root}/train_encoder/*/checkpoints/last.pt")
    assert torch.load(io.BytesIO(fs.cat_file(stored)), weights_only=True)["step"] == EVERY  # the first, intact
    assert temp.exists()

    second = fresh_copy(tmp_path_factory, request, "resume-pod2", reproduced_state=True)
    lengthen(second)
    assert not (second.root / ".lpr" / "work").exists()
    resumed = second.dvc("repro", "train_encoder")
    assert resumed.ran == ["train_encoder"]
    done = summary(second)
    assert done["resumed_from"] == EVERY and done["steps"] == STEPS, resumed.output[-3000:]
    assert done["state"].startswith(root)
    assert_same_weights(weights(second), reference)
    fs.invalidate_cache()
    assert not fs.glob(f"{root}/train_encoder/*/checkpoints/last.pt")  # spent: removed from the store
