"""lpr_core.data.boxes: keep_ratio sizes and box mapping, checked against img2dataset itself."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from lpr_core.data.boxes import (
    boxes_to_downloaded,
    boxes_to_original,
    clip_to_frame,
    keep_ratio_size,
    scale_factors,
)


@pytest.fixture(scope="module")
def resizer_cls():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from img2dataset.resizer import Resizer

    return Resizer


def jpeg(width: int, height: int, box: tuple[int, int, int, int] | None = None) -> bytes:
    img = np.full((height, width, 3), 30, np.uint8)
    if box is not None:
        x1, y1, x2, y2 = box
        img[y1:y2, x1:x2] = 230
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    return buf.getvalue()


SIZES = [(320, 240), (240, 320), (301, 173), (128, 500), (1000, 129), (127, 90), (64, 64), (129, 128), (333, 1)]


@pytest.mark.parametrize("only_if_bigger", [False, True])
def test_keep_ratio_size_matches_img2dataset_resizer(resizer_cls, only_if_bigger):
    resizer = resizer_cls(image_size=128, resize_mode="keep_ratio", resize_only_if_bigger=only_if_bigger)
    ow = np.array([w for w, _ in SIZES])
    oh = np.array([h for _, h in SIZES])
    width, height = keep_ratio_size(ow, oh, 128, only_if_bigger)
    for i, (w, h) in enumerate(SIZES):
        img, rw, rh, row, roh, err = resizer(io.BytesIO(jpeg(w, h)))
        assert err is None
        assert (row, roh) == (w, h)
        assert (width[i], height[i]) == (rw, rh), (w, h)
    # the smaller side is image_size, unless the image was smaller and only_if_bigger is set
    small = np.minimum(ow, oh) <= 128
    expect_min = np.where(small & only_if_bigger, np.minimum(ow, oh), 128)
    assert np.array_equal(np.minimum(width, height), expect_min)


def brute_force(boxes, ow, oh, w, h):
    out = np.empty_like(boxes, dtype=np.float64)
    for i in range(boxes.shape[0]):
        for j in range(boxes.shape[1]):
            sx, sy = w[i] / ow[i], h[i] / oh[i]
            x1, y1, x2, y2 = boxes[i, j]
            out[i, j] = [min(max(x1 * sx, 0), w[i]), min(max(y1 * sy, 0), h[i]),
                         min(max(x2 * sx, 0), w[i]), min(max(y2 * sy, 0), h[i])]
    return out


def test_boxes_to_downloaded_matches_brute_force_with_broadcasting():
    rng = np.random.default_rng(0)
    frames, per_frame = 7, 5
    ow = rng.integers(150, 2000, frames)
    oh = rng.integers(150, 2000, frames)
    w, h = keep_ratio_size(ow, oh, 224)
    xy1 = rng.uniform(0, 1, (frames, per_frame, 2)) * np.stack([ow, oh], -1)[:, None, :]
    wh = rng.uniform(0, 0.6, (frames, per_frame, 2)) * np.stack([ow, oh], -1)[:, None, :]
    boxes = np.concatenate([xy1, xy1 + wh], -1)  # some boxes run past the frame: clipped
    got = boxes_to_downloaded(boxes, ow[:, None], oh[:, None], w[:, None], h[:, None])
    assert got.dtype == np.float32 and got.shape == boxes.shape
    np.testing.assert_allclose(got, brute_force(boxes, ow, oh, w, h), rtol=1e-6, atol=1e-4)


def test_round_trip_and_scalar_sizes():
    boxes = np.array([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 640.0, 480.0]])
    down = boxes_to_downloaded(boxes, 640, 480, 171, 128)
    np.testing.assert_allclose(down[1], [0, 0, 171, 128], atol=1e-4)
    np.testing.assert_allclose(boxes_to_original(down, 640, 480, 171, 128), boxes, rtol=1e-5)
    sx, sy = scale_factors(640, 480, 171, 128)
    assert sx == pytest.approx(171 / 640) and sy == pytest.approx(128 / 480)


def test_mapped_box_lands_on_the_drawn_box_after_img2dataset_resize(resizer_cls):
    # a bright rectangle drawn in the original frame must sit inside the mapped box after resizing
    resizer = resizer_cls(image_size=128, resize_mode="keep_ratio", resize_only_if_bigger=True)
    box = (200, 96, 460, 300)
    img, w, h, ow, oh, err = resizer(io.BytesIO(jpeg(640, 400, box)))
    assert err is None
    x1, y1, x2, y2 = boxes_to_downloaded(np.array(box, float), ow, oh, w, h)
    arr = np.asarray(Image.open(io.BytesIO(img)).convert("L"), dtype=np.int32)
    ys, xs = np.nonzero(arr > 130)
    assert abs(xs.min() - x1) <= 1.5 and abs(xs.max() + 1 - x2) <= 1.5
    assert abs(ys.min() - y1) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5


def test_bad_input_is_rejected_with_the_index():
    with pytest.raises(ValueError, match=r"original_width must be positive.*index \[1\]"):
        boxes_to_downloaded(np.zeros((2, 4)), np.array([10, 0]), 10, 5, 5)
    with pytest.raises(ValueError, match="width must be positive"):
        scale_factors(10, 10, np.array([np.nan]), 5)  # a failed download has no size
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4\)"):
        boxes_to_downloaded(np.zeros((2, 3)), 10, 10, 5, 5)


def _clip_oracle(box, w, h):
    """One box against one frame, the plain way: (clipped box, past the edge, keeps area, outside share)."""
    x1, y1, x2, y2 = box
    if not (w > 0 and h > 0 and np.isfinite(w) and np.isfinite(h)):
        return list(box), False, x2 > x1 and y2 > y1, float("nan")
    c = [max(x1, 0.0), max(y1, 0.0), min(x2, w), min(y2, h)]
    past = x1 < 0 or y1 < 0 or x2 > w or y2 > h
    keeps = c[2] > c[0] and c[3] > c[1]
    area = (x2 - x1) * (y2 - y1)
    inside = max(c[2] - c[0], 0.0) * max(c[3] - c[1], 0.0)
    return c, past, keeps, (1 - inside / area) if area > 0 else float("nan")


def test_clip_to_frame_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    n = 500
    w = rng.choice([720.0, 1280.0, 540.0, np.nan], n)  # NaN: the frame did not download
    h = rng.choice([1280.0, 720.0, 960.0], n)
    x1 = rng.uniform(-200, 1300, n)
    y1 = rng.uniform(-200, 1300, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(-20, 400, n), y1 + rng.uniform(-20, 400, n)], 1)
    boxes[:5] = [[0, 0, 720, 1280], [-1, 0, 10, 10], [720, 0, 730, 10], [0, 0, 0, 10], [10, 10, 5, 20]]
    w[:5], h[:5] = 720, 1280
    got = clip_to_frame(boxes, w, h)
    for i in range(n):
        c, past, keeps, outside = _clip_oracle(boxes[i], w[i], h[i])
        assert got.boxes[i].tolist() == pytest.approx(c)
        assert (bool(got.past_edge[i]), bool(got.keeps_area[i])) == (past, keeps), i
        assert got.known[i] == np.isfinite(w[i])
        if np.isnan(outside):
            assert np.isnan(got.outside_fraction[i])
        else:
            assert got.outside_fraction[i] == pytest.approx(outside)
    # on the border exactly is inside; wholly outside keeps no area; degenerate boxes have no share
    assert got.past_edge[:5].tolist() == [False, True, True, False, False]
    assert got.keeps_area[:5].tolist() == [True, True, False, False, False]
    assert got.outside_fraction[2] == 1.0 and np.isnan(got.outside_fraction[3])


def test_clip_to_frame_scalar_sizes_and_bad_shape():
    got = clip_to_frame([[-10, 5, 90, 50]], 100, 40)
    assert got.boxes.tolist() == [[0, 5, 90, 40]]
    assert got.outside_fraction[0] == pytest.approx(1 - 90 * 35 / (100 * 45))
    assert clip_to_frame(np.zeros((0, 4)), 10, 10).boxes.shape == (0, 4)
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        clip_to_frame(np.zeros((2, 3)), 10, 10)
