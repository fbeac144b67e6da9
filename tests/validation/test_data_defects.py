"""Data tests: each defect class, planted in a copy of a tiny world, fails validation by name.

Every test plants one defect, runs the real validation (real readers, real great-expectations
checkpoint, real Pillow decoding) and asserts that the expectation meant for that defect failed
and named the planted id. The clean world passes.
"""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

from .world import one_file, read_json, read_manifest, set_column, write_json, write_manifest


def failed(outcome) -> set[str]:
    return {f"{c.suite}.{c.check}" for c in outcome.checks if not c.success}


def detail_of(outcome, check: str, id_: str) -> str:
    f = outcome.failing
    suite, name = check.split(".")
    return f.loc[(f["suite"] == suite) & (f["check"] == name) & (f["id"] == id_), "detail"].iloc[0]


def failing_ids(outcome, check: str, severity: str = "error") -> set[str]:
    f = outcome.failing
    suite, name = check.split(".")
    return set(f.loc[(f["suite"] == suite) & (f["check"] == name) & (f["severity"] == severity), "id"])


def videoinfo_rows(world) -> tuple[object, list[list[str]]]:
    path = one_file(world.annotations, "videoinfo")
    return path, [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def write_videoinfo_rows(path, rows) -> None:
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


def test_clean_world_passes(world):
    outcome = world.validate()
    assert outcome.success, failed(outcome)
    assert not failed(outcome)
    assert (outcome.failing["severity"] != "error").all()
    assert outcome.summary["counts"]["test_queries"] > 0
    assert set(outcome.summary["suites"]) == {c.suite for c in outcome.checks}
    assert outcome.summary["download_success_rate"]["test/frames"] == 1.0


def test_gt_image_missing_from_its_gallery(world):
    gt_path = one_file(world.annotations, "test_gt_images")
    gallery = read_json(one_file(world.annotations, "test_gallery"))
    gt = read_json(gt_path)
    clip = sorted(gt)[0]
    other_live = next(live for live in gallery if live != clip[:36])
    gt[clip] = [gallery[other_live][0]]  # an existing, downloaded image of another livestream
    write_json(gt_path, gt)
    outcome = world.validate()
    assert "test_queries.gt_in_gallery" in failed(outcome)
    assert failing_ids(outcome, "test_queries.gt_in_gallery") == {clip}
    assert detail_of(outcome, "test_queries.gt_in_gallery", clip) == (
        f"not in the gallery of {clip[:36]}: {gt[clip][0]}"
    )


def _frame_widths(world, split="test"):
    return {r["frame_id"]: r["original_width"] for r in read_manifest(world.download, split, "frames").to_pylist()}


def _push_right(box, width, outside):
    """``box`` moved right so that ``outside`` of its width lies past the frame's right edge."""
    x1, y1, x2, y2 = box
    shift = width + outside * (x2 - x1) - x2
    return [x1 + shift, y1, x2 + shift, y2]


def test_a_few_boxes_past_the_frame_edge_pass_and_are_counted_per_split(world):
    path = one_file(world.annotations, "test_frame_boxes")
    boxes = read_json(path)
    widths = _frame_widths(world)
    frame = sorted(boxes)[0]
    boxes[frame][0] = _push_right(boxes[frame][0], widths[frame], 0.3)  # a product held at the edge
    write_json(path, boxes)
    outcome = world.validate()
    assert outcome.success, failed(outcome)
    n_test = sum(len(b) for b in boxes.values())
    assert outcome.summary["boxes"]["test"] == {
        "boxes": n_test, "checked": n_test, "past_edge": 1, "no_area_left": 0, "mostly_outside": 0,
        "past_edge_fraction": round(1 / n_test, 6)}
    assert outcome.summary["boxes"]["train"]["past_edge"] == 0
    from lpr_core.validation.runner import summary_metrics

    metrics = summary_metrics(outcome.summary)
    assert metrics["validate/boxes/test/past_edge"] == 1.0
    assert metrics["validate/boxes/test/past_edge_fraction"] == pytest.approx(1 / n_test, abs=1e-6)
    checks = {f"{c.suite}.{c.check}": c for c in outcome.checks}
    assert checks["box_edges.test_past_edge"].observed == pytest.approx(1 / n_test)  # shown in Data Docs


def test_a_box_mostly_outside_its_frame(world):
    path = one_file(world.annotations, "test_frame_boxes")
    boxes = read_json(path)
    frame = sorted(boxes)[0]
    boxes[frame][0] = _push_right(boxes[frame][0], _frame_widths(world)[frame], 0.7)
    write_json(path, boxes)
    outcome = world.validate()
    assert failed(outcome) == {"boxes.mostly_inside"}
    assert failing_ids(outcome, "boxes.mostly_inside") == {frame}
    assert detail_of(outcome, "boxes.mostly_inside", frame).endswith(": 70% of it outside")


def test_a_box_with_no_area_left_in_its_frame(world):
    path, rows = videoinfo_rows(world)
    row = rows[0]
    frame_boxes = json.loads(row[2])
    k = next(i for i, b in enumerate(frame_boxes) if b)
    frame = json.loads(row[1].replace("'", '"'))[k]
    width = _frame_widths(world, "train")[frame]
    x1, y1, x2, y2 = frame_boxes[k][0]
    frame_boxes[k][0] = [width + 5, y1, width + 5 + (x2 - x1), y2]  # wholly right of the frame
    row[2] = json.dumps(frame_boxes)
    write_videoinfo_rows(path, rows)
    outcome = world.validate()
    assert failed(outcome) == {"boxes.area_left", "boxes.mostly_inside"}
    assert failing_ids(outcome, "boxes.area_left") == {frame}
    assert outcome.summary["boxes"]["train"]["no_area_left"] == 1


def test_too_many_boxes_past_the_frame_edge(world):
    path = one_file(world.annotations, "test_frame_boxes")
    boxes = read_json(path)
    widths = _frame_widths(world)
    moved = sorted(boxes)[: len(boxes) // 4]  # a quarter of the boxed frames, each a little past the edge
    for frame in moved:
        boxes[frame] = [_push_right(b, widths[frame], 0.1) for b in boxes[frame]]
    write_json(path, boxes)
    share = sum(len(boxes[f]) for f in moved) / sum(len(b) for b in boxes.values())
    assert share > world.params.max_clipped_box_fraction
    outcome = world.validate()
    assert failed(outcome) == {"box_edges.test_past_edge"}
    check = next(c for c in outcome.checks if c.check == "test_past_edge")
    assert check.observed == pytest.approx(share)
    assert outcome.summary["boxes"]["test"]["past_edge_fraction"] == pytest.approx(share, abs=1e-6)
    assert world.validate(max_clipped_box_fraction=0.5).success  # the threshold is a param


def test_malformed_box(world):
    path = one_file(world.annotations, "test_frame_boxes")
    boxes = read_json(path)
    frame = sorted(boxes)[-1]
    x1, y1, x2, y2 = boxes[frame][0]
    boxes[frame][0] = [x2, y1, x1, y2]  # x1 > x2
    write_json(path, boxes)
    outcome = world.validate()
    assert "boxes.well_formed" in failed(outcome)
    assert failing_ids(outcome, "boxes.well_formed") == {frame}


def test_duplicate_clip_id(world):
    path, rows = videoinfo_rows(world)
    rows.append(list(rows[0]))
    write_videoinfo_rows(path, rows)
    outcome = world.validate()
    assert failed(outcome) == {"train_clips.unique"}
    assert failing_ids(outcome, "train_clips.unique") == {rows[0][0]}


def test_corrupt_jpeg(world):
    frames = read_manifest(world.download, "test", "frames")
    row = frames.slice(3, 1).to_pylist()[0]
    data = (world.download / row["path"]).read_bytes()
    (world.download / row["path"]).write_bytes(data[: len(data) // 2])  # truncated: no EOI
    outcome = world.validate()
    assert failed(outcome) == {"manifests.decodes"}
    assert failing_ids(outcome, "manifests.decodes") == {row["frame_id"]}
    assert outcome.summary["counts"]["decode_failures"] == 1


def test_download_success_rate_below_threshold(world):
    table = read_manifest(world.download, "train", "frames")
    n = table.num_rows
    n_failed = int(n * (1 - world.params.min_download_success_rate)) + 2
    status = ["failed" if i < n_failed else "success" for i in range(n)]
    write_manifest(world.download, "train", "frames", set_column(table, "status", status))
    outcome = world.validate()
    assert "files.download_success_rate" in failed(outcome)
    assert failing_ids(outcome, "files.download_success_rate") == {"manifest/train_frames"}
    assert outcome.summary["download_success_rate"]["train/frames"] == pytest.approx((n - n_failed) / n)


def test_missing_gallery_for_a_livestream_with_queries(world):
    path = one_file(world.annotations, "test_gallery")
    gallery = read_json(path)
    live = sorted(gallery)[0]
    del gallery[live]
    write_json(path, gallery)
    outcome = world.validate()
    assert "test_livestreams.has_gallery" in failed(outcome)
    assert failing_ids(outcome, "test_livestreams.has_gallery") == {live}


def test_inconsistent_category_name(world):
    path, rows = videoinfo_rows(world)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[5]] = counts.get(r[5], 0) + 1
    category = next(c for c, n in counts.items() if n >= 2)
    row = next(r for r in rows if r[5] == category)
    row[6] = row[6] + " (renamed)"
    write_videoinfo_rows(path, rows)
    outcome = world.validate()
    assert failed(outcome) == {"categories.one_name_per_id"}
    assert failing_ids(outcome, "categories.one_name_per_id") == {category}


def test_type_code_outside_its_set(world):
    # the lenient reader rejects the row; its rejects count is what fails
    path, rows = videoinfo_rows(world)
    rows[2][8] = "7"  # scale type: 0, 1, 2
    write_videoinfo_rows(path, rows)
    outcome = world.validate()
    assert failed(outcome) == {"files.reader_rejects"}
    assert failing_ids(outcome, "files.reader_rejects") == {"videoinfo", f"{path.name}:3"}
    f = outcome.failing
    assert "scale_type" in f.loc[f["id"] == f"{path.name}:3", "detail"].item()


def test_frame_and_box_lists_of_different_lengths(world):
    path, rows = videoinfo_rows(world)
    boxes = rows[1][2]
    rows[1][2] = boxes[: boxes.rindex(", [")] + "]"  # drop the last frame's box list
    write_videoinfo_rows(path, rows)
    outcome = world.validate()
    assert failed(outcome) == {"files.reader_rejects"}
    assert failing_ids(outcome, "files.reader_rejects") == {"videoinfo", f"{path.name}:2"}


def test_query_with_too_few_decodable_frames(world):
    table = read_manifest(world.download, "test", "frames")
    clip = table["clip_id"][0].as_py()
    in_clip = pc.equal(table["clip_id"], clip).to_pylist()
    keep = world.params.min_decodable_frames - 1
    status, seen = [], 0
    for hit in in_clip:
        seen += hit
        status.append("failed" if hit and seen > keep else "success")
    write_manifest(world.download, "test", "frames", set_column(table, "status", status))
    outcome = world.validate()
    assert failed(outcome) == {"test_queries.decodable_frames"}
    assert failing_ids(outcome, "test_queries.decodable_frames") == {clip}


def test_wrong_keep_ratio_size(world):
    table = read_manifest(world.download, "test", "images")
    widths = table["width"].to_pylist()
    widths[1] += 10
    write_manifest(world.download, "test", "images", set_column(table, "width", widths))
    outcome = world.validate()
    assert failed(outcome) == {"manifests.keep_ratio_size"}
    assert failing_ids(outcome, "manifests.keep_ratio_size") == {table["image_id"][1].as_py()}
    assert detail_of(outcome, "manifests.keep_ratio_size", table["image_id"][1].as_py()).startswith(
        f"downloaded {widths[1]}x{table['height'][1].as_py()} from an original"
    )


def test_duplicate_images_are_reported_and_fail_above_the_threshold(world):
    table = read_manifest(world.download, "test", "images")
    sha = table["sha256"].to_pylist()
    sha[2] = sha[1]  # a re-upload: same bytes under another image id
    write_manifest(world.download, "test", "images", set_column(table, "sha256", sha))
    dup = {table["image_id"][1].as_py(), table["image_id"][2].as_py()}

    n_images = sum(read_manifest(world.download, s, "images").num_rows for s in ("train", "test"))
    lenient = world.validate(max_duplicate_image_fraction=3 / n_images)
    assert lenient.success
    assert failing_ids(lenient, "manifests.duplicate_images", "warning") == dup

    strict = world.validate(max_duplicate_image_fraction=1 / n_images)
    assert failed(strict) == {"manifests.duplicate_images"}
    assert failing_ids(strict, "manifests.duplicate_images") == dup


def test_missing_required_manifest(world):
    (world.download / "manifests" / "test_images.parquet").unlink()
    outcome = world.validate()
    assert "files.present" in failed(outcome)
    assert failing_ids(outcome, "files.present") == {"manifest/test_images"}
    # the same input, declared optional, only fails what truly needs it (the gallery downloads)
    optional = world.validate(required=tuple(r for r in world.params.required if r != "manifest/test_images"))
    assert "files.present" not in failed(optional)
    assert "test_gallery.downloaded" in failed(optional)


def test_manifest_ids_off_the_grammar(world):
    # the id grammar is matched once per row when the check table is built: a frame id with a
    # path in it, and an image id with a trailing newline (which Python's ``$`` would let through)
    frames = read_manifest(world.download, "test", "frames")
    frame_ids = frames["frame_id"].to_pylist()
    bad_frame = frame_ids[1] = f"../{frame_ids[1]}"
    write_manifest(world.download, "test", "frames", set_column(frames, "frame_id", frame_ids))
    images = read_manifest(world.download, "train", "images")
    image_ids = images["image_id"].to_pylist()
    bad_image = image_ids[0] = f"{image_ids[0]}\n"
    write_manifest(world.download, "train", "images", set_column(images, "image_id", image_ids))
    outcome = world.validate()
    assert {"manifests.frame_id", "manifests.image_id"} <= failed(outcome)
    assert failing_ids(outcome, "manifests.frame_id") == {bad_frame}
    assert failing_ids(outcome, "manifests.image_id") == {bad_image}
    checks = {c.check: c for c in outcome.checks if c.suite == "manifests"}
    assert checks["frame_id"].unexpected_count == 1 and checks["image_id"].unexpected_count == 1
