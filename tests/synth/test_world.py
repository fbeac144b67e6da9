"""The synthetic world: exact LPR4M formats, consistency across files, determinism."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from PIL import Image

from lpr_core import cli, ids
from lpr_core.formats.readers import SCHEMAS, find_lpr4m_files, read_kind
from lpr_core.formats.schema import DURATION_TYPES, FILE_PATTERNS, NUMBER_TYPES, SCALE_TYPES
from lpr_core.synth.layout import SOURCE_DIR, source_path
from lpr_core.synth.render import DURATION_BOUNDS, SCALE_AREA_BOUNDS
from lpr_core.synth.vocab import CATEGORIES, COLOUR_FAMILIES
from lpr_core.synth.world import (
    DEFAULT_URL_PREFIX,
    WorldConfig,
    WorldExistsError,
    generate_world,
    plan_world,
    set_url_prefix,
)

from .helpers import lines, load_json, tree_bytes, url_ids, videoinfo_rows

MICRO = WorldConfig("micro", 1, 1, (3, 3), (1, 1), 1.0, (4, 4))


def test_files_are_named_like_the_release_with_their_counts(tiny_world):
    w = tiny_world.out_dir
    c = tiny_world.counts
    expected = {
        "videoinfo": f"training_videoinfo_{c['train_clips']}.txt",
        "train_frame_urls": f"training_frame_url_{c['train_frames']}.txt",
        "train_image_urls": f"training_image_url_{c['train_images']}.txt",
        "test_frame_urls": f"test_frame_url_{c['test_frames']}.txt",
        "test_image_urls": f"test_image_url_{c['test_gallery_images']}.txt",
        "test_asr": f"test_videoid_asr_{c['test_queries']}.txt",
        "test_titles": f"test_image_title_{c['test_titles']}.txt",
        "test_gt_images": f"test_videoid_to_gtimage_{c['test_queries']}.json",
        "test_frame_boxes": f"test_frameid2gtbox_{c['test_queries']}_{c['test_boxed_frames']}.json",
        "test_gallery": f"test_liveid_to_gallery_{c['test_livestreams']}.json",
    }
    assert {k: p.name for k, p in tiny_world.files.items()} == expected
    for kind, pattern in FILE_PATTERNS.items():
        assert [p.name for p in w.glob(pattern)] == [expected[kind]]
    # the annotation files sit at the top level, the JPEGs under _source/
    assert {p.name for p in w.iterdir()} == set(expected.values()) | {SOURCE_DIR}


def test_every_file_reads_back_strictly_with_the_project_readers(tiny_world):
    c = tiny_world.counts
    files = find_lpr4m_files(tiny_world.out_dir)
    rows = {}
    for kind, paths in files.items():
        result = read_kind(kind, paths, strict=True)
        assert result.table.schema == SCHEMAS[kind]
        rows[kind] = result.table
    assert rows["videoinfo"].num_rows == c["train_clips"]
    assert rows["train_frame_urls"].num_rows == c["train_frames"]
    assert rows["test_frame_urls"].num_rows == c["test_frames"]
    assert rows["test_gt_images"].num_rows == c["test_queries"]
    assert rows["test_frame_boxes"].num_rows == c["test_boxed_frames"]
    assert rows["test_gallery"].num_rows == c["test_gallery_images"]
    vi = rows["videoinfo"].to_pylist()
    assert sum(len(r["frame_indices"]) for r in vi) == c["train_frames"]
    assert sum(len(r["boxes"]) for r in vi) == c["train_boxed_frames"]


def test_counts_and_ids_are_consistent_across_files(tiny_world):
    w = tiny_world.out_dir
    prefix = DEFAULT_URL_PREFIX
    assert all(u.startswith(prefix) for kind in FILE_PATTERNS if kind.endswith("_urls") for u in lines(w, kind))

    # training: URL list frames == videoinfo frames, in order; images == videoinfo images
    rows = videoinfo_rows(w)
    vi_frames = [f for r in rows for f in r[1]]
    assert url_ids(w, "train_frame_urls") == vi_frames
    assert len(set(vi_frames)) == len(vi_frames)
    assert set(url_ids(w, "train_image_urls")) == {r[3] for r in rows}
    for r in rows:
        clip = ids.parse_clip_id(r[0])
        assert len(str(clip.start_ms)) == 13 and clip.start_ms < clip.end_ms
        assert [ids.parse_frame_id(f) for f in r[1]] == [(r[0], i) for i in range(len(r[1]))]
        assert len(r[1]) == len(r[2])  # one box list per frame
        assert CATEGORIES[r[5]].name == r[6]
        assert r[8] in SCALE_TYPES and r[9] in DURATION_TYPES and r[10] in NUMBER_TYPES
        assert r[4] and r[7]  # title and ASR

    # test: query clips agree between ASR, gt, URL list and boxes
    gt = load_json(w, "test_gt_images")
    asr = dict(line.split("\t") for line in lines(w, "test_asr"))
    test_frames = url_ids(w, "test_frame_urls")
    assert set(asr) == set(gt) == {ids.parse_frame_id(f).clip_id for f in test_frames}
    boxes = load_json(w, "test_frame_boxes")
    assert set(boxes) <= set(test_frames)
    assert all(len(b) == 1 and len(b[0]) == 4 for b in boxes.values())

    # galleries: gt images are in their own livestream's gallery; titles and URLs cover them
    gallery = load_json(w, "test_gallery")
    test_images = url_ids(w, "test_image_urls")
    assert sorted(test_images) == sorted(i for imgs in gallery.values() for i in imgs)
    titles = dict(line.split("\t") for line in lines(w, "test_titles"))
    assert set(titles) == set(test_images)
    for clip_id, images in gt.items():
        live = ids.parse_clip_id(clip_id).live_id
        assert images and set(images) <= set(gallery[live])

    # test livestreams and products are distinct from training ones
    train_lives = {ids.parse_clip_id(r[0]).live_id for r in rows}
    assert not train_lives & set(gallery)
    assert not set(url_ids(w, "train_image_urls")) & set(test_images)
    assert len(train_lives) == tiny_world.counts["train_livestreams"]


def test_every_listed_item_has_a_decodable_source_jpeg_and_boxes_lie_inside(tiny_world):
    w = tiny_world.out_dir
    boxes = {f: b for r in videoinfo_rows(w) for f, b in zip(r[1], r[2])}
    boxes.update(load_json(w, "test_frame_boxes"))
    clip_sizes: dict[str, set] = {}
    for kind in ("train_frame_urls", "test_frame_urls"):
        for fid in url_ids(w, kind):
            with Image.open(source_path(w, fid)) as im:
                im.load()
                assert im.format == "JPEG"
                W, H = im.size
            clip_sizes.setdefault(ids.parse_frame_id(fid).clip_id, set()).add((W, H))
            for x1, y1, x2, y2 in boxes.get(fid, []):
                assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H, (fid, (x1, y1, x2, y2), (W, H))
    assert all(len(s) == 1 for s in clip_sizes.values())  # one size per clip ...
    sizes = {next(iter(s)) for s in clip_sizes.values()}
    assert len(sizes) > 3  # ... varying across clips
    assert all(180 <= min(s) <= 300 and max(s) <= 400 for s in sizes)
    for kind in ("train_image_urls", "test_image_urls"):
        for iid in url_ids(w, kind):
            with Image.open(source_path(w, iid)) as im:
                im.load()
                assert 232 <= im.width <= 288 and 232 <= im.height <= 288


def test_type_columns_are_measured_from_the_boxes(tiny_world):
    w = tiny_world.out_dir
    seen = set()
    for r in videoinfo_rows(w):
        frames, per_frame = r[1], r[2]
        with Image.open(source_path(w, frames[0])) as im:
            W, H = im.size
        areas = [(b[0][2] - b[0][0]) * (b[0][3] - b[0][1]) / (W * H) for b in per_frame if b]
        share = len(areas) / len(frames)
        lo, hi = DURATION_BOUNDS
        assert r[9] == (0 if share <= lo else 1 if share <= hi else 2)
        med = statistics.median(areas)
        lo, hi = SCALE_AREA_BOUNDS
        assert r[8] == (0 if med < lo else 1 if med < hi else 2)
        seen.add((r[8], r[9], r[10]))
    assert len({s[0] for s in seen}) >= 2 and len({s[1] for s in seen}) >= 2 and len({s[2] for s in seen}) == 2


def test_hidden_truth_matches_annotations(tiny_world):
    w = tiny_world.out_dir
    products = json.loads((w / SOURCE_DIR / "products.json").read_text())
    clips = json.loads((w / SOURCE_DIR / "clips.json").read_text())
    world = json.loads((w / SOURCE_DIR / "world.json").read_text())
    assert world["counts"] == tiny_world.counts and world["seed"] == 0 and world["size"] == "tiny"
    for r in videoinfo_rows(w):
        truth = clips[r[0]]
        assert (truth["image_id"], truth["scale_type"], truth["duration_type"], truth["number_type"]) == (
            r[3], r[8], r[9], r[10])
        assert products[r[3]]["category_id"] == r[5]
        assert (truth["number_type"] == 1) == bool(truth["distractors"])
    # a shop sells few categories and colour families: its products are near-duplicates
    by_live: dict[str, list] = {}
    for p in products.values():
        by_live.setdefault(p["live_id"], []).append(p)
    for items in by_live.values():
        assert len({p["category_id"] for p in items}) <= 3
        assert len({p["colour_family"] for p in items}) <= 4
    # titles name the product's colour
    titles = dict(line.split("\t") for line in lines(w, "test_titles"))
    for image_id, title in titles.items():
        words = COLOUR_FAMILIES[products[image_id]["colour_family"]][3]
        assert any(word in title for word in words), title


def test_plan_is_deterministic_and_seed_dependent():
    a, b, c = plan_world("tiny", 3), plan_world("tiny", 3), plan_world("tiny", 4)
    assert a == b
    assert [x.live_id for x in a] != [x.live_id for x in c]
    all_ids = [x.live_id for x in a] + [p.image_id for x in a for p in x.products]
    assert len(set(all_ids)) == len(all_ids) and all(ids.is_live_id(i) for i in all_ids)


def test_same_seed_gives_byte_identical_worlds_from_the_cli_with_workers(tiny_world, tmp_path, capsys):
    out = tmp_path / "again"
    assert cli.main(["synth", "--out", str(out), "--size", "tiny", "--seed", "0", "--workers", "2", "--quiet"]) == 0
    assert "train_frames" in capsys.readouterr().out
    assert tree_bytes(out) == tree_bytes(tiny_world.out_dir)


def test_url_prefix_is_rewritten_atomically_and_keeps_ids(tmp_path):
    s = generate_world(tmp_path / "w", size=MICRO, seed=1, url_prefix="http://127.0.0.1:1/a/")
    kinds = [k for k in FILE_PATTERNS if k.endswith("_urls")]
    before = {k: url_ids(s.out_dir, k) for k in kinds}
    n = set_url_prefix(s.out_dir, "http://127.0.0.1:5555/lpr/")
    assert n == sum(len(v) for v in before.values())
    for k in kinds:
        assert all(u.startswith("http://127.0.0.1:5555/lpr/") for u in lines(s.out_dir, k))
        assert url_ids(s.out_dir, k) == before[k]
    assert not list(s.out_dir.glob(".*tmp*"))
    with pytest.raises(ValueError, match="must be a string"):
        set_url_prefix(s.out_dir, "http://127.0.0.1:5555/no-slash")
    bad = s.files["test_image_urls"]
    bad.write_text(bad.read_text() + "http://x/not-an-id.jpg\n")
    with pytest.raises(ValueError, match=rf"{bad.name}:{len(before['test_image_urls']) + 1}"):
        set_url_prefix(s.out_dir, "http://127.0.0.1:1/a/")


def test_refuses_a_foreign_directory_but_replaces_its_own_world(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(WorldExistsError, match="not a synthetic world"):
        generate_world(foreign, size=MICRO)
    assert (foreign / "notes.txt").read_text() == "mine"
    s1 = generate_world(foreign, size=MICRO, seed=1, overwrite=True)
    assert not (foreign / "notes.txt").exists()
    s2 = generate_world(foreign, size=MICRO, seed=2)  # its own world: replaced, no stale files
    assert {p.name for p in s2.out_dir.glob("*.txt")} | {p.name for p in s2.out_dir.glob("*.json")} == {
        p.name for p in s2.files.values()}
    frames = {p.name for p in (foreign / SOURCE_DIR / "frames").rglob("*.jpg")}
    assert frames == {f"{i}.jpg" for k in ("train_frame_urls", "test_frame_urls") for i in url_ids(foreign, k)}
    assert s1.counts["train_clips"] == s2.counts["train_clips"] == 3
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("kwargs, match", [({"size": "huge"}, "unknown world size"),
                                           ({"url_prefix": "http://x"}, "ending with '/'")])
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_world(tmp_path / "w", **kwargs)
    assert not Path(tmp_path / "w").exists()
