"""The resume rule: the pure decision as a table of cases, then the I/O edge on real state folders."""

from __future__ import annotations

import dataclasses

import pytest

from lpr_core.training.distributed import DistEnv
from lpr_core.training.resume import RunIdentity, decide, prepare_run

BASE = RunIdentity(
    "train_encoder",
    inputs={"train_clips": "aa", "train_frames": "bb", "train_images": "cc"},
    params={"model": {"image_size": 32}, "train": {"lr": 0.001, "max_steps": 400}},
    world_size=1,
    runtime={"train.num_workers": 1, "train.device": "auto", "train.progress": True},
)


def changed(**kw) -> RunIdentity:
    return dataclasses.replace(BASE, **kw)


# (case, current, found, has_checkpoint, mode, resume?, words the note must hold)
CASES = [
    ("same identity, checkpoint", BASE, BASE, True, "auto", True, ["resuming"]),
    ("runtime-only change: num_workers", changed(runtime={**BASE.runtime, "train.num_workers": 8}), BASE, True,
     "auto", True, ["resuming", "train.num_workers: 1 -> 8"]),
    ("runtime-only change: device and progress",
     changed(runtime={**BASE.runtime, "train.device": "cuda", "train.progress": False}), BASE, True, "auto", True,
     ["resuming", "train.device: 'auto' -> 'cuda'", "train.progress: True -> False"]),
    ("changed input (one annotation row: another prepared table)",
     changed(inputs={**BASE.inputs, "train_clips": "a2"}), BASE, False, "auto", False,
     ["inputs changed", "train_clips changed", "starting fresh"]),
    ("changed input: a re-downloaded image changes the manifest",
     changed(inputs={**BASE.inputs, "train_frames": "b2"}), BASE, False, "auto", False, ["train_frames changed"]),
    ("an input more", changed(inputs={**BASE.inputs, "val_clips": "dd"}), BASE, False, "auto", False,
     ["val_clips is new"]),
    ("changed result-bearing param", changed(params={**BASE.params, "train": {"lr": 0.003, "max_steps": 400}}),
     BASE, False, "auto", False, ["params changed", "train.lr: 0.001 -> 0.003"]),
    ("changed world size", changed(world_size=2), BASE, False, "auto", False,
     ["world size changed", "1 -> 2 ranks"]),
    ("no checkpoint, nothing known", BASE, None, False, "auto", False, ["no checkpoint"]),
    ("no checkpoint of this identity yet", BASE, BASE, False, "auto", False, ["no checkpoint", "yet"]),
    ("--resume never", BASE, BASE, True, "never", False, ["--resume never", "discarded"]),
    ("a checkpoint without a stamp", BASE, None, True, "auto", False, ["without a readable stamp"]),
    ("a stamp of another run beside the checkpoint", BASE, changed(world_size=4), True, "auto", False,
     ["does not match", "world size changed"]),
]


@pytest.mark.parametrize(("current", "found", "has_checkpoint", "mode", "resume", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(current, found, has_checkpoint, mode, resume, words):
    decision = decide(current, found, has_checkpoint=has_checkpoint, mode=mode)
    assert decision.resume is resume, decision.note
    for word in words:
        assert word in decision.note, (word, decision.note)
    if not resume:
        assert "starting fresh" in decision.note


def test_decide_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="resume mode"):
        decide(BASE, BASE, has_checkpoint=True, mode="sometimes")


def test_identity_round_trips_through_its_stamp_and_ignores_runtime():
    assert RunIdentity.from_json(BASE.to_json()) == BASE
    assert changed(runtime={}) == BASE
    assert RunIdentity.from_json({"stage": "x"}) is None
    assert RunIdentity.from_json(None) is None


# ---------------------------------------------------------------------- the edge, on state folders


def _inputs(tmp_path, rows: str = "rows", folder: str = "in"):
    (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / folder / "train_clips.parquet").write_text(rows)
    (tmp_path / folder / "train_frames.parquet").write_text("frames")
    return {"train_clips": tmp_path / folder / "train_clips.parquet",
            "train_frames": tmp_path / folder / "train_frames.parquet"}


def _checkpoint(run) -> None:
    (run.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run.dir / "checkpoints" / "last.pt").write_bytes(b"ckpt")
    run.state.upload("checkpoints/last.pt")


@pytest.fixture(params=["local", "s3"])
def state_root(request, tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    if request.param == "local":
        return str(tmp_path / "state")
    from tests.pipeline.objectstore import apply_env, new_bucket

    apply_env(monkeypatch)
    return f"s3://{new_bucket()}/state"


def test_prepare_run_resumes_across_runtime_changes_and_starts_fresh_on_real_ones(tmp_path, state_root,
                                                                               encoder_params):
    env = DistEnv()
    params = encoder_params(num_workers=0)
    inputs = _inputs(tmp_path)
    first = prepare_run("train_encoder", params, inputs, env, root=state_root)
    assert not first.decision.resume and first.decision.note == "no checkpoint: starting fresh"
    assert first.state.read_json("run_params.json")["runtime"]["train.num_workers"] == 0
    _checkpoint(first)

    # a runtime change (num_workers, progress, device): the same folder, resumed
    runtime = encoder_params(num_workers=3, progress=True, device="auto")
    again = prepare_run("train_encoder", runtime, inputs, env, root=state_root)
    assert again.decision.resume and again.state.key == first.state.key, again.decision.note
    assert "train.num_workers: 0 -> 3" in again.decision.note

    # a changed result-bearing param: another folder, fresh, and the old one left alone
    lr = encoder_params(lr=0.003)
    other = prepare_run("train_encoder", lr, inputs, env, root=state_root)
    assert not other.decision.resume and other.state.key != first.state.key
    assert "params changed (train.lr: 0.001 -> 0.003)" in other.decision.note
    assert first.state.exists("checkpoints/last.pt")

    # a changed input: fresh again, naming the input
    changed_input = prepare_run("train_encoder", params, _inputs(tmp_path, "rows + one", "edited"), env, root=state_root)
    assert not changed_input.decision.resume and "train_clips changed" in changed_input.decision.note

    # back to the first identity: its checkpoint is still there; --resume never discards it
    back = prepare_run("train_encoder", params, inputs, env, root=state_root)
    assert back.decision.resume and back.state.key == first.state.key
    never = prepare_run("train_encoder", params, inputs, env, mode="never", root=state_root)
    assert not never.decision.resume and not never.state.exists("checkpoints/last.pt")

    # a finished run removes its folder
    _checkpoint(never)
    never.finish()
    assert not never.state.exists("checkpoints/last.pt") and not never.dir.exists()


def test_a_resume_from_the_store_brings_the_curves_into_a_fresh_workspace(tmp_path, state_root, encoder_params,
                                                                          monkeypatch):
    params = encoder_params()
    inputs = _inputs(tmp_path)
    first = prepare_run("train_encoder", params, inputs, DistEnv(), root=state_root)
    (first.dir / "plots").mkdir(parents=True)
    (first.dir / "plots" / "train_loss.tsv").write_text("step\ttrain/loss\n1\t0.5\n")
    first.state.upload("plots/train_loss.tsv")
    _checkpoint(first)
    pod2 = tmp_path / "pod2"
    pod2.mkdir()
    monkeypatch.chdir(pod2)  # another workspace: its own .lpr/work
    second = prepare_run("train_encoder", params, inputs, DistEnv(), root=state_root)
    assert second.decision.resume
    assert (second.dir / "plots" / "train_loss.tsv").read_text() == "step\ttrain/loss\n1\t0.5\n"
    assert second.checkpoints.where.endswith("checkpoints/last.pt")
    if first.state.remote:
        assert second.dir != first.dir and second.dir.is_relative_to(pod2)
