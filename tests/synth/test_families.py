"""World families: the ``release`` world is the LPR4M release as a user unpacks it, not the demo's world."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lpr_core import cli, ids
from lpr_core.formats.discovery import find_lpr4m_files
from lpr_core.formats.readers import SCHEMAS, read_kind
from lpr_core.synth.families import FAMILIES, family_of
from lpr_core.synth.layout import SOURCE_DIR, source_path
from lpr_core.synth.render import render_clip
from lpr_core.synth.world import plan_world, set_url_prefix

from .helpers import tree_bytes

RELEASE = FAMILIES["release"]


def _frame_size(world, frame_id):
    with Image.open(source_path(world, frame_id)) as im:
        return im.size


def _annotated_boxes(world):
    """(split, frame id, box) of every annotated box, read with the project's readers."""
    found = find_lpr4m_files(world)
    vi = read_kind("videoinfo", found["videoinfo"], strict=True).table.to_pylist()
    fb = read_kind("test_frame_boxes", found["test_frame_boxes"], strict=True).table.to_pylist()
    out = [("train", ids.make_frame_id(r["clip_id"], i), b) for r in vi for i, b in zip(r["box_frame_indices"], r["boxes"])]
    out += [("test", ids.make_frame_id(r["clip_id"], r["frame_index"]), b) for r in fb for b in r["boxes"]]
    return out


def test_files_sit_in_sub_folders_and_read_back_strictly(release_world):
    w = release_world.out_dir
    found = find_lpr4m_files(w)
    assert set(found) == set(SCHEMAS)
    for kind, paths in found.items():
        assert [p.parent.relative_to(w).as_posix() for p in paths] == [RELEASE.folder(kind)]
        assert read_kind(kind, paths, strict=True).table.num_rows > 0
    assert {k: p for k, p in release_world.files.items()} == {k: v[0] for k, v in found.items()}
    assert {p.name for p in w.iterdir()} == {"train", "test", SOURCE_DIR}  # nothing at the top level
    assert cli.main(["inspect", str(w), "--strict"]) == 0


def test_videoinfo_lists_are_json_and_boxes_absolute_pixels_with_decimals(release_world):
    line = release_world.files["videoinfo"].read_text(encoding="utf-8").splitlines()[0]
    cols = line.split("\t")
    frames, boxes = json.loads(cols[1]), json.loads(cols[2])  # JSON, not Python literals
    assert cols[1].startswith('["') and "'" not in cols[1]
    assert len(frames) == len(boxes)
    values = [v for r in _annotated_boxes(release_world.out_dir) for v in r[2]]
    assert max(values) > 400  # absolute pixels of large frames, not normalised
    assert any(v != round(v) for v in values)  # annotator boxes: two decimals
    assert all(round(v, 2) == pytest.approx(v, abs=1e-3) for v in values)


def test_a_few_percent_of_boxes_run_past_the_frame_edge_never_mostly(release_world):
    w = release_world.out_dir
    per_split: dict[str, list[int]] = {"train": [0, 0], "test": [0, 0]}
    for split, frame_id, (x1, y1, x2, y2) in _annotated_boxes(w):
        W, H = _frame_size(w, frame_id)
        past = x1 < 0 or y1 < 0 or x2 > W or y2 > H
        per_split[split][0] += 1
        per_split[split][1] += past
        inside = max(0.0, min(x2, W) - max(x1, 0)) * max(0.0, min(y2, H) - max(y1, 0))
        assert inside / ((x2 - x1) * (y2 - y1)) > 0.55, (frame_id, (x1, y1, x2, y2), (W, H))
    for split, (n, past) in per_split.items():
        assert 0 < past <= 0.1 * n, (split, past, n)


def test_one_frame_geometry_per_livestream_mostly_portrait_and_large_shop_images(release_world):
    w = release_world.out_dir
    found = find_lpr4m_files(w)
    sizes_by_live: dict[str, set] = {}
    for kind in ("train_frame_urls", "test_frame_urls"):
        for url in found[kind][0].read_text().split():
            frame_id = ids.parse_frame_url(url)[1]
            frame_id = ids.make_frame_id(frame_id.clip_id, frame_id.index)
            sizes_by_live.setdefault(frame_id[:36], set()).add(_frame_size(w, frame_id))
    allowed = {size for size, _ in RELEASE.stream_frame_sizes}
    assert all(len(s) == 1 and s <= allowed for s in sizes_by_live.values())
    assert any(h > wd for s in sizes_by_live.values() for wd, h in s)  # portrait streams
    for path in (w / SOURCE_DIR / "images").glob("*.jpg"):
        with Image.open(path) as im:
            assert im.size in RELEASE.gallery_sizes


def test_no_slice_labels_and_the_family_is_recorded(release_world):
    src = release_world.out_dir / SOURCE_DIR
    assert not (src / "clips.json").exists()
    assert json.loads((src / "world.json").read_text())["family"] == "release"
    assert release_world.family == "release"
    products = json.loads((src / "products.json").read_text())
    assert len(products) == release_world.counts["train_images"] + release_world.counts["test_gallery_images"]


def test_url_prefix_is_rewritten_in_sub_folders(release_world, tmp_path):
    import shutil

    w = tmp_path / "w"
    shutil.copytree(release_world.out_dir, w, ignore=shutil.ignore_patterns(SOURCE_DIR))
    n = set_url_prefix(w, "http://127.0.0.1:5555/lpr/")
    found = find_lpr4m_files(w)
    urls = [u for k in ("train_frame_urls", "train_image_urls", "test_frame_urls", "test_image_urls")
            for u in found[k][0].read_text().split()]
    assert n == len(urls) > 0 and all(u.startswith("http://127.0.0.1:5555/lpr/") for u in urls)


def test_an_edge_clip_shows_its_product_past_the_edge_at_its_last_visible_frame():
    lives = plan_world("tiny", 0, "release")
    edge = [(live, c) for live in lives for c in live.clips if c.plan.edge_out]
    assert len(edge) >= len(lives)  # at least one per livestream
    for live, clip in edge:
        W, _ = clip.plan.size
        frames = [f for f in render_clip(clip.plan, live.scene, {p.image_id: p.look for p in live.products},
                                         jpeg=False) if f.box is not None]
        last = frames[-1]
        x1, _, x2, _ = last.extent
        past = (x2 - W) if clip.plan.edge_out > 0 else -x1
        assert past > 0.5 * abs(clip.plan.edge_out) * (x2 - x1)  # the share asked for, about
        assert 0 <= last.box[0] and last.box[2] <= W  # the visible box stays in the frame


def test_the_default_family_draws_nothing_of_its_own():
    assert plan_world("tiny", 0) == plan_world("tiny", 0, "default") == plan_world("tiny", 0, FAMILIES["default"])
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    default = family_of("default")
    assert default.stream_frame_size(rng) is None and default.edge_clips(rng, 10) == frozenset()
    assert rng.bit_generator.state == state
    with pytest.raises(ValueError, match="unknown world family 'nope'"):
        family_of("nope")


@pytest.mark.slow
def test_same_seed_gives_a_byte_identical_release_world_from_the_cli(release_world, tmp_path, capsys):
    out = tmp_path / "again"
    args = ["synth", "--out", str(out), "--size", "tiny", "--family", "release", "--workers", "2", "--quiet"]
    assert cli.main(args) == 0
    assert "tiny release world" in capsys.readouterr().out
    assert tree_bytes(out) == tree_bytes(release_world.out_dir)
