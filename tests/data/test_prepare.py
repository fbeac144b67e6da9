"""The prepare stage on a tiny synthetic world and its download."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from lpr_core.data.prepare import PrepareParams, prepare, split_livestreams
from tests.validation.world import build_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("prepare"), 128)


def test_split_is_by_livestream_deterministic_and_order_free():
    lives = [f"{i:08d}-0000-0000-0000-000000000000" for i in range(20)]
    val = split_livestreams(lives, 0.2, seed=3)
    assert len(val) == 4
    assert val == split_livestreams(list(reversed(lives)) * 2, 0.2, seed=3)
    assert val != split_livestreams(lives, 0.2, seed=4)
    assert split_livestreams(lives[:1], 0.5, 0) == set()
    assert split_livestreams(lives, 0.0, 0) == set()


def test_prepare_tables(tiny):
    world, download = tiny
    res = prepare(world, download, PrepareParams(val_fraction=0.5, query_attributes="_source/clips.json"))
    train, val = res.tables["train_clips"], res.tables["val_clips"]
    assert train.num_rows > 0 and val.num_rows > 0
    assert not set(train.column("live_id").to_pylist()) & set(val.column("live_id").to_pylist())
    q = res.tables["test_queries"]
    assert q.num_rows == res.counts["test_queries"] == 12
    assert {"category_name", "scale_type", "duration_type", "number_type"} <= set(q.column_names)
    assert set(q.column("scale_type").to_pylist()) <= {"small", "medium", "large"}
    gallery = res.tables["test_gallery"]
    by_live = {}
    for live, image in zip(gallery.column("live_id").to_pylist(), gallery.column("image_id").to_pylist()):
        by_live.setdefault(live, set()).add(image)
    for live, gts in zip(q.column("live_id").to_pylist(), q.column("gt_image_ids").to_pylist()):
        assert set(gts) <= by_live[live]


def test_clips_whose_image_failed_are_dropped(tiny, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc

    world, download = tiny
    dl = tmp_path / "download"
    shutil.copytree(download, dl)
    path = dl / "manifests" / "train_images.parquet"
    t = pq.read_table(path)
    victim = t.column("image_id")[0].as_py()
    status = pc.if_else(pc.equal(t.column("image_id"), victim), "failed", t.column("status"))
    pq.write_table(t.set_column(t.schema.get_field_index("status"), "status", status.cast(pa.string())), path)
    res = prepare(world, dl, PrepareParams(val_fraction=0.0))
    assert res.counts["dropped_clips_image_missing"] >= 1
    assert victim not in res.tables["train_clips"].column("image_id").to_pylist()


def test_missing_attributes_file_is_a_note_not_an_error(tiny):
    world, download = tiny
    res = prepare(world, download, PrepareParams(query_attributes="nope.json"))
    assert "category_name" not in res.tables["test_queries"].column_names
    assert any("nope.json" in n for n in res.notes)


def test_stage_writes_outputs_atomically_and_explains_errors(tiny, tmp_path):
    world, download = tiny
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  val_fraction: 0.5\n  seed: 0\n  query_attributes: _source/clips.json\n")
    out = tmp_path / "prepared"
    cmd = [sys.executable, "-m", "lpr_core.stages.prepare", "--annotations", str(world), "--download",
           str(download), "--out", str(out), "--params", str(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {"train_clips.parquet", "val_clips.parquet", "test_queries.parquet", "test_gallery.parquet",
            "prepare_summary.json"} <= names
    assert json.loads((out / "prepare_summary.json").read_text())["counts"]["test_queries"] == 12
    assert not list(tmp_path.glob(".prepared.tmp*"))
    bad = subprocess.run(cmd[:6] + [str(tmp_path / "no-download")] + cmd[7:], capture_output=True, text=True,
                         cwd=tmp_path)
    assert bad.returncode == 1 and "download manifest missing" in bad.stderr
    assert (out / "train_clips.parquet").exists()  # the earlier output is untouched
