"""The failure kinds of missed queries: frame states, the vote per query, counts and metrics."""

from __future__ import annotations

import math

import pytest

from lpr_core.evaluation.failures import (
    FAILURE_KINDS,
    KIND_TEXT,
    analyse_failures,
    box_iou,
    classify_miss,
    classify_misses,
    count_failures,
    failure_kinds,
    failure_metrics,
    frame_iou,
    frame_state,
    select_failures,
)

GT = [(10, 10, 50, 50)]
RIGHT = [(12, 12, 50, 52)]  # IoU 0.86 with GT
WRONG = [(40, 40, 90, 90)]  # IoU 0.03


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_frame_iou_takes_the_union_of_the_crop_boxes_and_the_best_ground_truth_box():
    # two detector boxes cropped as one: their union equals the ground-truth box
    assert frame_iou([(10, 10, 30, 50), (30, 10, 50, 50)], GT) == pytest.approx(1.0)
    assert frame_iou(WRONG, [(0, 0, 5, 5), (40, 40, 90, 90)]) == pytest.approx(1.0)
    assert frame_iou(None, GT) is None and frame_iou(RIGHT, []) is None


def test_frame_state_uses_iou_half():
    assert frame_state(RIGHT, GT) == "right_box"
    assert frame_state(WRONG, GT) == "wrong_box"
    assert frame_state([(10, 10, 50, 50)], [(10, 10, 50, 90)]) == "right_box"  # IoU exactly 0.5
    assert frame_state([(10, 10, 50, 49)], [(10, 10, 50, 90)]) == "wrong_box"  # just under
    assert frame_state(None, GT) == "no_box" and frame_state([], None) == "no_box"
    assert frame_state(RIGHT, None) is None  # a box where nothing is annotated: not judged


def test_a_miss_takes_the_most_common_frame_state():
    assert classify_miss([]) == "no_frames"
    assert classify_miss([(None, GT)] * 4) == "no_box"
    assert classify_miss([(WRONG, GT)] * 3 + [(RIGHT, GT)]) == "wrong_box"
    assert classify_miss([(RIGHT, GT)] * 3 + [(WRONG, GT), (None, GT)]) == "right_box_wrong_image"
    assert classify_miss([(RIGHT, None)] * 4) == "box_not_annotated"
    # unjudged frames do not vote: one judged right box decides
    assert classify_miss([(RIGHT, None)] * 3 + [(RIGHT, GT)]) == "right_box_wrong_image"


def test_ties_go_to_the_earlier_step_of_the_pipeline():
    assert classify_miss([(None, GT), (WRONG, GT), (RIGHT, GT)]) == "no_box"
    assert classify_miss([(WRONG, GT), (RIGHT, GT)]) == "wrong_box"


def test_classify_misses_skips_hits_and_reads_the_frames_the_encoder_read():
    ranks = {"a": 1.0, "b": 2.0, "c": math.inf, "d": 3.0, "e": 5.0}
    frames = {"a": [0, 1], "b": [0, 1], "d": [0, 1], "e": [0, 7]}
    crops = {("b", 0): RIGHT, ("b", 1): RIGHT, ("d", 0): WRONG, ("d", 1): WRONG, ("e", 3): RIGHT}
    gt = {(q, i): GT for q in "abde" for i in (0, 1, 3)}
    kinds = classify_misses(ranks, frames, crops, gt)  # e's box lies on a frame it did not read
    assert kinds == {"b": "right_box_wrong_image", "c": "no_frames", "d": "wrong_box", "e": "no_box"}
    # full frames: every miss with frames is no_box
    assert set(classify_misses(ranks, frames, None, gt).values()) == {"no_box", "no_frames"}
    # ground-truth crops: a box is right by construction
    assert classify_misses(ranks, frames, gt, gt)["d"] == "right_box_wrong_image"
    # no ground-truth boxes: detector boxes cannot be judged
    assert classify_misses(ranks, frames, crops, None)["b"] == "box_not_annotated"


@pytest.mark.parametrize(
    ("crops", "have_gt", "expected"),
    [
        ("none", True, ("no_frames", "no_box")),
        ("ground_truth", True, ("no_frames", "no_box", "right_box_wrong_image")),
        ("detector", True, FAILURE_KINDS),
        ("detector", False, ("no_frames", "no_box", "box_not_annotated")),
    ],
)
def test_the_kinds_that_apply_follow_the_crop_mode(crops, have_gt, expected):
    assert failure_kinds(crops, have_ground_truth_boxes=have_gt) == expected


def test_the_kinds_of_each_mode_are_the_ones_classify_can_give():
    ranks = {"b": 2.0, "c": math.inf, "d": 3.0, "e": 5.0}
    frames = {"b": [0], "d": [0], "e": [0]}
    gt = {("b", 0): GT, ("d", 0): GT}
    for crops, boxes in (("none", None), ("ground_truth", gt), ("detector", {("b", 0): RIGHT, ("d", 0): WRONG})):
        kinds = classify_misses(ranks, frames, boxes, gt)
        count_failures(kinds, failure_kinds(crops))  # raises on a kind the mode cannot give


def test_unknown_crop_mode_is_refused():
    with pytest.raises(ValueError, match="auto"):
        failure_kinds("auto")


def test_counts_keep_every_applicable_kind_and_refuse_stray_ones():
    kinds = {"a": "no_box", "b": "no_box", "c": "right_box_wrong_image"}
    counts = count_failures(kinds, failure_kinds("ground_truth"))
    assert counts == {"no_frames": 0, "no_box": 2, "right_box_wrong_image": 1}
    assert list(counts) == ["no_frames", "no_box", "right_box_wrong_image"]
    with pytest.raises(ValueError, match="wrong_box"):
        count_failures({"a": "wrong_box"}, failure_kinds("none"))
    assert failure_metrics(counts) == {
        "test/misses/no_frames": 0,
        "test/misses/no_box": 2,
        "test/misses/right_box_wrong_image": 1,
    }


def test_select_failures_is_seeded_bounded_and_in_order():
    kinds = {f"q{i:02d}": ("wrong_box" if i % 3 else "no_box") for i in range(30)}
    picked = select_failures(kinds, 4, seed=1)
    assert list(picked) == ["no_box", "wrong_box"]  # pipeline order
    for kind, ids in picked.items():
        assert len(ids) == 4 and all(kinds[q] == kind for q in ids) and ids == sorted(ids)
    assert picked == select_failures(kinds, 4, seed=1)
    assert picked != select_failures(kinds, 4, seed=2)
    assert select_failures(kinds, 0) == {"no_box": [], "wrong_box": []}
    assert select_failures({"x": "no_frames"}, 3) == {"no_frames": ["x"]}


def test_every_kind_is_explained():
    assert set(KIND_TEXT) == set(FAILURE_KINDS)


def test_analyse_failures_counts_the_kinds_of_the_mode_and_says_how_they_were_judged():
    ranks = {"a": 1.0, "b": 2.0, "c": math.inf}
    frames = {"a": [0], "b": [0]}
    gt = {("a", 0): GT, ("b", 0): GT}
    analysis = analyse_failures(ranks, frames, "detector", {("b", 0): WRONG}, gt)
    assert analysis.kinds == {"b": "wrong_box", "c": "no_frames"}
    assert analysis.counts == {k: int(k in ("wrong_box", "no_frames")) for k in FAILURE_KINDS}
    assert "IoU >= 0.5" in analysis.note
    full = analyse_failures(ranks, frames, "none", {("b", 0): WRONG}, gt)  # boxes of no use to the encoder
    assert full.kinds == {"b": "no_box", "c": "no_frames"} and full.crop_boxes is None
    assert "full frames" in full.note
    unjudged = analyse_failures(ranks, frames, "detector", {("b", 0): WRONG}, None)
    assert unjudged.counts == {"no_frames": 1, "no_box": 0, "box_not_annotated": 1}
    assert "not judged" in unjudged.note
