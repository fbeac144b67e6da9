"""lpr_core.state: the stages' resumable state folders, on a local root and in a real S3 API (moto)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lpr_core import state as st
from tests.pipeline.objectstore import apply_env, new_bucket


def test_the_root_comes_from_the_argument_then_lpr_state_url_then_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(st.STATE_ENV, raising=False)
    assert st.state_root() == str(tmp_path / ".lpr" / "state")
    monkeypatch.setenv(st.STATE_ENV, "s3://bucket/lpr-state/")
    assert st.state_root() == "s3://bucket/lpr-state"
    assert st.state_root(tmp_path / "given") == str(tmp_path / "given")
    monkeypatch.setenv(st.STATE_ENV, f"file://{tmp_path}/shared")
    assert st.state_root() == str(tmp_path / "shared")
    monkeypatch.setenv(st.STATE_ENV, "relative/state")
    assert st.state_root() == str(tmp_path / "relative" / "state")
    assert st.is_remote("s3://b/p") and st.is_remote("gs://b/p")
    assert not st.is_remote("/data/state") and not st.is_remote("file:///data/state")


def test_fingerprint_hashes_file_bytes_by_name(tmp_path):
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "train_clips.parquet").write_bytes(b"rows")
    (tmp_path / "prepared" / ".train_clips.parquet.tmp-1-ab").write_bytes(b"a killed writer's leftover")
    (tmp_path / "m.parquet").write_bytes(b"manifest")
    fp = st.fingerprint({"prepared": tmp_path / "prepared", "frames": tmp_path / "m.parquet"})
    assert list(fp) == ["frames", "prepared/train_clips.parquet"]  # sorted, hidden files left out
    assert fp["frames"] == st.file_sha256(tmp_path / "m.parquet")
    assert st.fingerprint([tmp_path / "m.parquet"]) == {"m.parquet": fp["frames"]}
    (tmp_path / "m.parquet").write_bytes(b"manifest with one more row")
    assert st.fingerprint([tmp_path / "m.parquet"])["m.parquet"] != fp["frames"]
    with pytest.raises(FileNotFoundError, match="nowhere.parquet"):
        st.fingerprint([tmp_path / "nowhere.parquet"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "m.parquet").write_bytes(b"x")
    with pytest.raises(ValueError, match="same file name"):
        st.fingerprint([tmp_path / "m.parquet", tmp_path / "other" / "m.parquet"])


def test_local_files_keeps_the_settings_that_name_a_file(tmp_path):
    (tmp_path / "clip.pt").write_bytes(b"weights")
    found = st.local_files({"weights": str(tmp_path / "clip.pt"), "backbone": "none", "tag": "openai", "none": None})
    assert found == {"weights": tmp_path / "clip.pt"}


def test_the_key_is_the_identity_and_nothing_else():
    a = {"inputs": {"x": "1"}, "params": {"lr": 0.1, "model": {"w": 32}}}
    assert st.state_key(a) == st.state_key(json.loads(json.dumps(a)))  # order and round trip
    assert st.state_key(a) != st.state_key({**a, "params": {"lr": 0.2, "model": {"w": 32}}})
    assert st.state_key(a) != st.state_key({**a, "inputs": {"x": "2"}})


def test_open_state_places_the_folder_by_stage_and_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = st.open_state("train_encoder", {"params": {"lr": 0.1}}, root=tmp_path / "root")
    assert local.local == tmp_path / "root" / "train_encoder" / local.key and local.url == str(local.local)
    assert not local.remote
    remote = st.open_state("train_encoder", {"params": {"lr": 0.1}}, root="s3://b/state")
    assert remote.remote and remote.key == local.key
    assert remote.url == f"s3://b/state/train_encoder/{remote.key}"
    assert remote.local == tmp_path / ".lpr" / "work" / "train_encoder" / remote.key
    with pytest.raises(ValueError, match="folder name"):
        st.open_state("../escape", {}, root=tmp_path)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path, monkeypatch) -> str:
    """A state root: a local folder, or a fresh bucket of the session's S3 server."""
    monkeypatch.chdir(tmp_path)
    if request.param == "local":
        return str(tmp_path / "state")
    apply_env(monkeypatch)
    return f"s3://{new_bucket()}/lpr-state"


def test_a_state_folder_round_trips_through_its_store(root, tmp_path):
    s = st.open_state("download", {"inputs": {"urls.txt": "abc"}}, root=root)
    assert not s.exists("run_params.json") and s.read_json("run_params.json") is None and s.list() == []
    s.write_json("run_params.json", {"stage": "download"})
    shard = s.local / "work" / "train_frames" / "00000.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"shard bytes")
    (s.local / "work" / "train_frames" / "00000_stats.json").write_text("{}")
    s.upload_many(["work/train_frames/00000.parquet"])
    s.upload("work/train_frames/00000_stats.json")
    assert s.list("work") == ["work/train_frames/00000.parquet", "work/train_frames/00000_stats.json"]
    assert s.read_json("run_params.json") == {"stage": "download"}
    assert s.read_bytes("work/train_frames/00000.parquet") == b"shard bytes"
    s.write_latest({"key": s.key})
    assert s.read_latest() == {"key": s.key}

    # another workspace (a retried pod) with the same root and identity finds it all
    other = st.open_state("download", {"inputs": {"urls.txt": "abc"}}, root=root, work_root=tmp_path / "pod2")
    assert other.url == s.url and other.read_json("run_params.json") == {"stage": "download"}
    if s.remote:
        assert other.local != s.local and not other.local.exists()
        other.download_many(["work/train_frames/00000.parquet"])
        assert other.download("work/train_frames/00000_stats.json")
        assert (other.local / "work/train_frames/00000.parquet").read_bytes() == b"shard bytes"
        assert not other.download("work/train_frames/00001_stats.json")
    other.remove("work/train_frames/00000_stats.json")
    assert not s.exists("work/train_frames/00000_stats.json")
    s.clear()
    assert s.list() == [] and not s.exists("run_params.json") and not s.local.exists()
    assert s.read_latest() == {"key": s.key}  # the stage's latest identity outlives the folder


def test_an_upload_replaces_the_object_whole(root):
    s = st.open_state("train_encoder", {"k": 1}, root=root)
    (s.local / "checkpoints").mkdir(parents=True)
    ckpt = s.local / "checkpoints" / "last.pt"
    ckpt.write_bytes(b"A" * 100_000)
    s.upload("checkpoints/last.pt")
    ckpt.write_bytes(b"B" * 200_000)
    assert s.read_bytes("checkpoints/last.pt") == (b"A" * 100_000 if s.remote else b"B" * 200_000)
    s.upload("checkpoints/last.pt")
    assert s.read_bytes("checkpoints/last.pt") == b"B" * 200_000
    if s.remote:  # nothing but the object itself: no temporary object left beside it
        assert s.list("checkpoints") == ["checkpoints/last.pt"]
    assert not [p for p in os.listdir(ckpt.parent) if p.startswith(".")]


def test_the_environment_reaches_a_child_process(root, tmp_path):
    """A stage process reads ``LPR_STATE_URL`` (and the S3 variables) from its environment."""
    import subprocess
    import sys

    s = st.open_state("prepare", {}, root=root)
    s.write_json("run_params.json", {"from": "parent"})
    code = ("import json, sys; from lpr_core import state as st; "
            "print(json.dumps(st.open_state('prepare', {}).read_json('run_params.json')))")
    env = {**os.environ, st.STATE_ENV: root, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == {"from": "parent"}
