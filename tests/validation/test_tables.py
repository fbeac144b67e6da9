"""Check tables built from small hand-made inputs (no files, no great-expectations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from lpr_core.formats.readers import SCHEMAS
from lpr_core.formats.schema import FRAME_MANIFEST_SCHEMA, IMAGE_MANIFEST_SCHEMA
from lpr_core.validation.images import DECODE_COLUMNS
from lpr_core.validation.inputs import SourceInfo, ValidationInputs
from lpr_core.validation.params import ALL_SOURCES, ValidateParams
from lpr_core.validation.tables import TABLE_NAMES, build_tables, keep_ratio_ok, schema_problems

LIVE_A = "aaaaaaaa-0000-4000-8000-000000000001"
LIVE_B = "bbbbbbbb-0000-4000-8000-000000000002"
IMG = [f"cccccccc-0000-4000-8000-00000000000{i}" for i in range(6)]
CLIP_A = f"{LIVE_A}-1000-5000"
CLIP_B = f"{LIVE_B}-2000-6000"
P = ValidateParams(image_size=224)  # the manifests below hold downloads resized to 224


def _frames_manifest(rows: list[dict]) -> pa.Table:
    full = []
    for r in rows:
        full.append(
            {
                "frame_id": f"{r['clip']}-{r['index']:04d}", "clip_id": r["clip"], "frame_index": r["index"],
                "url": "u", "path": "p", "tar_member": None, "width": r.get("w", 398), "height": r.get("h", 224),
                "original_width": r.get("ow", 1280), "original_height": r.get("oh", 720),
                "status": r.get("status", "success"), "error": None, "sha256": "0" * 64,
            }
        )
    return pa.Table.from_pylist(full, schema=FRAME_MANIFEST_SCHEMA)


def _images_manifest(rows: list[dict]) -> pa.Table:
    full = [
        {
            "image_id": r["id"], "url": "u", "path": "p", "tar_member": None, "width": 224, "height": 224,
            "original_width": 500, "original_height": 500, "status": r.get("status", "success"), "error": None,
            "sha256": r.get("sha", r["id"].replace("-", "")[:32] * 2),
        }
        for r in rows
    ]
    return pa.Table.from_pylist(full, schema=IMAGE_MANIFEST_SCHEMA)


def make_inputs(*, gt=None, gallery=None, frame_boxes=None, videoinfo=None, frames=None, images=None,
                train_frames=None):
    ann = {kind: schema.empty_table() for kind, schema in SCHEMAS.items()}
    if gt is not None:
        ann["test_gt_images"] = pa.Table.from_pylist(
            [{"clip_id": c, "live_id": c[:36], "gt_image_ids": g} for c, g in gt.items()], schema=SCHEMAS["test_gt_images"]
        )
    if gallery is not None:
        ann["test_gallery"] = pa.Table.from_pylist(
            [{"live_id": lv, "image_id": i} for lv, ims in gallery.items() for i in ims], schema=SCHEMAS["test_gallery"]
        )
    if frame_boxes is not None:
        ann["test_frame_boxes"] = pa.Table.from_pylist(frame_boxes, schema=SCHEMAS["test_frame_boxes"])
    if videoinfo is not None:
        ann["videoinfo"] = pa.Table.from_pylist(videoinfo, schema=SCHEMAS["videoinfo"])
    manifests = {("train", "frames"): train_frames, ("train", "images"): None, ("test", "frames"): frames,
                 ("test", "images"): images}
    sources = {name: SourceInfo(name, files=["x"], rows_read=1) for name in ALL_SOURCES}
    return ValidationInputs(ann, manifests, sources, Path("."))


def no_decode() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in DECODE_COLUMNS})


def _vi_row(clip, frames, box_frames, boxes, category_id=1, name="bag", scale=0):
    return {
        "clip_id": clip, "live_id": clip[:36], "start_ms": 0, "end_ms": 1, "frame_indices": frames,
        "box_frame_indices": box_frames, "boxes": boxes, "image_id": IMG[0], "image_title": "t",
        "category_id": category_id, "category_name": name, "asr": "", "scale_type": scale, "duration_type": 0,
        "number_type": 0,
    }


# --------------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    "w, h, ow, oh, only_if_bigger, ok",
    [
        (398, 224, 1280, 720, True, True),  # landscape: smaller side to 224
        (224, 398, 720, 1280, True, True),  # portrait
        (399, 224, 1280, 720, True, True),  # rounding within 1 px
        (401, 224, 1280, 720, True, False),
        (224, 224, 1280, 720, True, False),  # squashed
        (200, 150, 200, 150, True, True),  # smaller original kept
        (299, 224, 200, 150, True, False),  # ... not upscaled
        (299, 224, 200, 150, False, True),  # unless img2dataset upscales
        (224, 224, 224, 224, True, True),
        (np.nan, 224, 1280, 720, True, False),
        (0, 0, 0, 0, True, False),
    ],
)
def test_keep_ratio_ok(w, h, ow, oh, only_if_bigger, ok):
    got = keep_ratio_ok(np.array([w]), np.array([h]), np.array([ow]), np.array([oh]), 224,
                        resize_only_if_bigger=only_if_bigger, tolerance=1.0)
    assert got.tolist() == [ok]


def test_schema_problems_names_missing_and_mistyped_columns():
    assert schema_problems(FRAME_MANIFEST_SCHEMA, FRAME_MANIFEST_SCHEMA) == []
    extra = FRAME_MANIFEST_SCHEMA.append(pa.field("extra", pa.string()))
    assert schema_problems(extra, FRAME_MANIFEST_SCHEMA) == []
    bad = FRAME_MANIFEST_SCHEMA.remove(FRAME_MANIFEST_SCHEMA.get_field_index("sha256"))
    bad = bad.set(bad.get_field_index("width"), pa.field("width", pa.int64()))
    assert schema_problems(bad, FRAME_MANIFEST_SCHEMA) == ["column width is int64, expected int32", "missing column sha256"]


# ---------------------------------------------------------------------------------------- tables


def test_every_table_is_built_from_empty_inputs():
    tables = build_tables(make_inputs(), no_decode(), P)
    assert tuple(tables) == TABLE_NAMES
    assert all("id" in t.columns for t in tables.values())
    assert all(len(t) == 0 for name, t in tables.items() if name not in ("files", "box_edges"))
    assert tables["box_edges"]["id"].tolist() == ["train", "test"]  # one row per split, always
    assert tables["box_edges"]["checked"].tolist() == [0, 0]


def test_queries_gt_in_own_gallery_and_decodable_frames():
    inputs = make_inputs(
        gt={CLIP_A: [IMG[0]], CLIP_B: [IMG[0], IMG[3]]},  # IMG[0] belongs to live A only
        gallery={LIVE_A: [IMG[0], IMG[1]], LIVE_B: [IMG[3]]},
        frames=_frames_manifest(
            [{"clip": CLIP_A, "index": i} for i in range(4)]
            + [{"clip": CLIP_B, "index": 0}, {"clip": CLIP_B, "index": 1, "status": "failed"}]
        ),
    )
    decoded = pd.DataFrame(
        {"split": ["test"], "kind": ["frames"], "id": [f"{CLIP_A}-0002"], "decoded": [False], "error": ["bad"]}
    )
    q = build_tables(inputs, decoded, P)["test_queries"].set_index("id")
    assert q.loc[CLIP_A, "gt_in_gallery"] and not q.loc[CLIP_B, "gt_in_gallery"]
    assert q["n_gt_images"].to_dict() == {CLIP_A: 1, CLIP_B: 2}
    assert q["n_decodable_frames"].to_dict() == {CLIP_A: 3, CLIP_B: 1}


def test_livestreams_with_queries_and_their_gallery_size():
    inputs = make_inputs(gt={CLIP_A: [IMG[0]], CLIP_B: [IMG[3]]}, gallery={LIVE_A: [IMG[0], IMG[1]]})
    lives = build_tables(inputs, no_decode(), P)["test_livestreams"].set_index("id")
    assert lives["n_gallery_images"].to_dict() == {LIVE_A: 2, LIVE_B: 0}
    assert lives["n_queries"].to_dict() == {LIVE_A: 1, LIVE_B: 1}


def test_gallery_downloaded_needs_a_successful_manifest_row():
    inputs = make_inputs(
        gallery={LIVE_A: [IMG[0], IMG[1], IMG[2]]},
        images=_images_manifest([{"id": IMG[0]}, {"id": IMG[1], "status": "failed"}]),
    )
    g = build_tables(inputs, no_decode(), P)["test_gallery"].set_index("id")
    assert g["downloaded"].tolist() == [True, False, False]


def test_boxes_against_their_original_frame_well_formed_and_unknown_without_a_download():
    # frames are 1280x720 originals
    inputs = make_inputs(
        gt={CLIP_A: [IMG[0]]},
        frame_boxes=[
            {"clip_id": CLIP_A, "frame_index": 0, "boxes": [[0, 0, 100, 100], [1200, 0, 1300, 10]]},
            {"clip_id": CLIP_A, "frame_index": 1, "boxes": [[50, 50, 40, 60]]},
            {"clip_id": CLIP_A, "frame_index": 2, "boxes": [[0, 0, 10, 10]]},  # not downloaded
            {"clip_id": CLIP_B, "frame_index": 0, "boxes": [[0, 0, 10, 10]]},  # not a query clip
            {"clip_id": CLIP_A, "frame_index": 3, "boxes": [[1280, 0, 1300, 10], [1000, 700, 1280, 720]]},
        ],
        frames=_frames_manifest(
            [{"clip": CLIP_A, "index": 0}, {"clip": CLIP_A, "index": 1}, {"clip": CLIP_B, "index": 0},
             {"clip": CLIP_A, "index": 2, "status": "failed"}, {"clip": CLIP_A, "index": 3}]
        ),
    )
    tables = build_tables(inputs, no_decode(), P)
    b = tables["boxes"]
    assert b["id"].tolist() == [f"{CLIP_A}-0000", f"{CLIP_A}-0000", f"{CLIP_A}-0001", f"{CLIP_A}-0002",
                                f"{CLIP_B}-0000", f"{CLIP_A}-0003", f"{CLIP_A}-0003"]
    assert b["well_formed"].tolist() == [True, True, False, True, True, True, True]
    # past the edge by 20 of 100 px: clipped, keeps its area; wholly right of the frame: no area left;
    # on the border exactly: inside. Unknown: not downloaded, or not well formed
    assert b["past_edge"].tolist() == [False, True, pd.NA, pd.NA, False, True, False]
    assert b["keeps_area"].tolist() == [True, True, pd.NA, pd.NA, True, False, True]
    assert b["outside_fraction"].round(6).tolist()[:2] == [0.0, 0.2]
    assert np.isnan(b["outside_fraction"].iloc[2]) and np.isnan(b["outside_fraction"].iloc[3])
    assert b["outside_fraction"].iloc[5] == 1.0
    assert b["clip_annotated"].tolist() == [True, True, True, True, False, True, True]
    assert b["detail"].iloc[5] == "box [1280.0, 0.0, 1300.0, 10.0] in an original 1280x720 frame: 100% of it outside"
    edges = tables["box_edges"].set_index("id")
    assert edges.loc["test", ["boxes", "checked", "past_edge", "no_area_left", "mostly_outside"]].tolist() == [7, 5, 2, 1, 1]
    assert edges.loc["test", "past_edge_fraction"] == pytest.approx(2 / 5)
    assert edges.loc["train", ["boxes", "checked", "past_edge"]].tolist() == [0, 0, 0]  # both splits, always
    assert edges.loc["train", "past_edge_fraction"] == 0.0


def test_train_clips_boxes_must_belong_to_listed_frames():
    box = [[1.0, 1.0, 5.0, 5.0]]
    inputs = make_inputs(
        videoinfo=[
            _vi_row(CLIP_A, [0, 1, 2], [1], box),
            _vi_row(CLIP_B, [0, 1], [3], box),  # frame 3 is not listed
            _vi_row(f"{LIVE_A}-9-10", [0, 1], [0, 1], box),  # two box frames, one box list
        ]
    )
    clips = build_tables(inputs, no_decode(), P)["train_clips"]
    assert clips["boxes_match_frames"].tolist() == [True, False, False]


def test_categories_one_name_per_id_and_one_id_per_name():
    box = [[1.0, 1.0, 5.0, 5.0]]
    rows = [
        _vi_row(f"{LIVE_A}-{k}-{k + 1}", [0], [0], box, category_id=cid, name=name)
        for k, (cid, name) in enumerate([(1, "bag"), (1, "bag"), (2, "shoe"), (2, "boot"), (3, "hat"), (4, "hat")])
    ]
    cats = build_tables(make_inputs(videoinfo=rows), no_decode(), P)["categories"].set_index("id")
    assert cats["n_names"].to_dict() == {"1": 1, "2": 2, "3": 1, "4": 1}
    assert cats["n_ids_sharing_name"].to_dict() == {"1": 1, "2": 1, "3": 2, "4": 2}
    assert cats.loc["2", "detail"] == "names: boot | shoe"


def test_duplicate_sha256_across_image_ids_only():
    sha = "ab" * 32
    inputs = make_inputs(
        images=_images_manifest(
            [{"id": IMG[0], "sha": sha}, {"id": IMG[1], "sha": sha}, {"id": IMG[2]}, {"id": IMG[2]},
             {"id": IMG[3], "sha": sha, "status": "failed"}]
        )
    )
    m = build_tables(inputs, no_decode(), P)["manifests"]
    assert m["sha_unique"].tolist() == [False, False, True, True, pd.NA]
    assert m["size_ok"].tolist() == [True, True, True, True, pd.NA]


def test_files_table_success_rate_against_the_url_list():
    inputs = make_inputs(images=_images_manifest([{"id": IMG[0]}, {"id": IMG[1], "status": "failed"}]))
    inputs.annotations["test_image_urls"] = pa.Table.from_pylist(
        [{"url": f"u/{i}.jpg", "image_id": i} for i in IMG[:4]], schema=SCHEMAS["test_image_urls"]
    )
    inputs.sources["manifest/test_frames"] = SourceInfo("manifest/test_frames")  # absent
    inputs.sources["test_asr"] = SourceInfo("test_asr", files=["a"], rows_read=10, rows_rejected=2)
    files = build_tables(inputs, no_decode(), ValidateParams(required=("test_asr",)))["files"].set_index("id")
    assert files.loc["manifest/test_images", "success_rate"] == pytest.approx(0.25)
    assert files.loc["test_asr", "reject_fraction"] == pytest.approx(0.2)
    assert not files.loc["manifest/test_frames", "present"]
    assert files.loc["manifest/test_frames", "present_or_optional"]  # not required here


def test_train_boxes_are_checked_against_the_train_frames_manifest():
    inside, outside = [0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 1400.0, 100.0]  # 1280 px wide frames
    inputs = make_inputs(
        videoinfo=[_vi_row(CLIP_A, [0, 1, 2], [0, 2, 2], [inside, inside, outside])],
        train_frames=_frames_manifest([{"clip": CLIP_A, "index": 0}, {"clip": CLIP_A, "index": 2}]),
        frames=_frames_manifest([{"clip": CLIP_A, "index": 1}]),  # the test manifest is not used for train
    )
    b = build_tables(inputs, no_decode(), P)["boxes"]
    assert b["split"].tolist() == ["train"] * 3
    assert b["id"].tolist() == [f"{CLIP_A}-0000", f"{CLIP_A}-0002", f"{CLIP_A}-0002"]
    assert b["past_edge"].tolist() == [False, False, True]
    assert b["outside_fraction"].round(6).tolist() == [0.0, 0.0, round(120 / 1400, 6)]
    edges = build_tables(inputs, no_decode(), P)["box_edges"].set_index("id")
    assert edges.loc["train", ["boxes", "checked", "past_edge"]].tolist() == [3, 3, 1]


def test_manifest_id_grammar_per_kind_with_na_on_the_other_kind():
    frames = _frames_manifest([{"clip": CLIP_A, "index": 0}, {"clip": CLIP_A, "index": 1}])
    ids = frames["frame_id"].to_pylist()
    frames = frames.set_column(0, "frame_id", pa.array([ids[0], f"{ids[1]}\n"], pa.string()))
    images = _images_manifest([{"id": IMG[0]}, {"id": f"../{IMG[1]}"}])
    m = build_tables(make_inputs(frames=frames, images=images), no_decode(), P)["manifests"]
    assert m["kind"].tolist() == ["frames", "frames", "images", "images"]
    assert m["frame_id_ok"].tolist() == [True, False, pd.NA, pd.NA]  # "\n" after the id: not the grammar
    assert m["image_id_ok"].tolist() == [pd.NA, pd.NA, True, False]
