"""The prepare stage on a tiny synthetic world and its download."""

import ast
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
    res = prepare(world, dl, PrepareParams(val_fraction=0.0, query_attributes=None))
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


def _frame_sizes(download, split):
    return {r["frame_id"]: (r["original_width"], r["original_height"], r["status"])
            for r in pq.read_table(download / "manifests" / f"{split}_frames.parquet").to_pylist()}


def test_boxes_are_clipped_to_their_frame_once_counted_per_split(tiny, tmp_path):
    import pyarrow as pa
    import pyarrow.compute as pc

    from lpr_core.formats.discovery import find_lpr4m_files
    from tests.validation.world import copy_world

    world, download = copy_world(tiny[0].parent, tmp_path)
    sizes = _frame_sizes(download, "test")
    path = find_lpr4m_files(world)["test_frame_boxes"][0]
    boxes = json.loads(path.read_text())
    past, gone, unchecked = sorted(boxes)[:3]
    w, h, _ = sizes[past]
    x1, y1, x2, y2 = boxes[past][0]
    boxes[past][0] = [x1, y1, w + 0.3 * (x2 - x1), y2]  # past the right edge
    boxes[gone] = [[w + 1.0, 0.0, w + 20.0, 10.0]]  # wholly outside: no area left
    x1, y1, x2, y2 = boxes[unchecked][0]
    boxes[unchecked][0] = [x1, y1, 5000.0, y2]  # its frame did not download: not checked, kept
    path.write_text(json.dumps(boxes))
    manifest = download / "manifests" / "test_frames.parquet"
    t = pq.read_table(manifest)
    status = pc.if_else(pc.equal(t.column("frame_id"), unchecked), "failed", t.column("status")).cast(pa.string())
    pq.write_table(t.set_column(t.schema.get_field_index("status"), "status", status), manifest)
    vi_path = find_lpr4m_files(world)["videoinfo"][0]
    rows = [line.split("\t") for line in vi_path.read_text().splitlines()]
    frame_boxes = ast.literal_eval(rows[0][2])
    k = next(i for i, b in enumerate(frame_boxes) if b)
    frame_boxes[k][0][0] = -25  # past the left edge
    rows[0][2] = json.dumps(frame_boxes)
    vi_path.write_text("".join("\t".join(r) + "\n" for r in rows))

    res = prepare(world, download, PrepareParams(val_fraction=0.0, query_attributes=None))
    n_test = sum(len(b) for b in boxes.values())
    assert {k: v for k, v in res.counts.items() if k.startswith("test/")} == {
        "test/boxes": n_test, "test/boxes_past_edge": 2, "test/boxes_dropped_no_area": 1, "test/boxes_unchecked": 1}
    assert res.counts["train/boxes_past_edge"] == 1 and res.counts["train/boxes_dropped_no_area"] == 0
    table = res.tables["test_frame_boxes"]
    got = {f"{c}-{i:04d}": b for c, i, b in zip(table.column("clip_id").to_pylist(),
                                               table.column("frame_index").to_pylist(), table.column("boxes").to_pylist())}
    assert got[past][0][2] == w  # clipped to the frame
    assert gone not in got  # its only box had no area left: the frame row is gone
    assert got[unchecked][0][2] == 5000.0  # unknown frame size: left as it was
    assert len(got) == len(boxes) - 1
    for frame, frame_boxes_ in got.items():
        if frame == unchecked:
            continue
        fw, fh, _ = sizes[frame]
        assert all(0 <= b[0] < b[2] <= fw and 0 <= b[1] < b[3] <= fh for b in frame_boxes_)
    clip = res.tables["train_clips"].filter(pc.equal(res.tables["train_clips"].column("clip_id"), rows[0][0]))
    assert clip.column("boxes").to_pylist()[0][_box_position(frame_boxes, k)][0] == 0.0  # clipped at x = 0


def _box_position(frame_boxes, k):
    """Position of frame ``k``'s first box in a clip's flattened box list."""
    return sum(len(b) for b in frame_boxes[:k])


def test_a_release_world_is_prepared_with_every_box_inside_its_frame(tmp_path):
    from lpr_core.synth.world import generate_world
    from tests.validation.world import build_download

    world = generate_world(tmp_path / "world", size="tiny", seed=0, family="release").out_dir
    download = tmp_path / "download"
    build_download(world, download, 128)
    res = prepare(world, download, PrepareParams(val_fraction=0.0, query_attributes=None))  # files in sub-folders are found
    assert res.counts["test_queries"] > 0 and res.counts["train_clips"] > 0
    assert res.counts["train/boxes_past_edge"] > 0 and res.counts["test/boxes_past_edge"] > 0
    for split, table in (("train", res.tables["train_clips"]), ("test", res.tables["test_frame_boxes"])):
        sizes = _frame_sizes(download, split)
        rows = table.to_pylist()
        frames = ([(f"{r['clip_id']}-{i:04d}", [b]) for r in rows for i, b in zip(r["box_frame_indices"], r["boxes"])]
                  if split == "train" else [(f"{r['clip_id']}-{r['frame_index']:04d}", r["boxes"]) for r in rows])
        assert sum(len(b) for _, b in frames) == res.counts[f"{split}/boxes"] - res.counts[f"{split}/boxes_dropped_no_area"]
        for frame, frame_boxes in frames:
            w, h, _ = sizes[frame]
            assert all(0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h for b in frame_boxes), frame
