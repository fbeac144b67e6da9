"""Transforms: seeded augmentation, eval shapes, box crops with fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors

from lpr_core.data.transforms import (
    build_detection_transform,
    build_eval_transform,
    build_train_transform,
    crop_box,
    jitter_box,
    seeded,
    union_box,
)


def _image(w=60, h=40):
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


def test_train_transform_is_reproducible_under_a_seed_and_leaves_global_rng_alone():
    tf = build_train_transform(32)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded(5):
        a = tf(_image())
    assert torch.equal(torch.get_rng_state(), before)
    with seeded(5):
        b = tf(_image())
    with seeded(6):
        c = tf(_image())
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_transform_is_deterministic_and_normalised():
    tf = build_eval_transform(24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    white = tf(Image.new("RGB", (50, 30), (255, 255, 255)))
    assert white.shape == (3, 24, 24)
    torch.testing.assert_close(white, torch.ones_like(white))
    assert torch.equal(tf(_image()), tf(_image()))


def test_union_box():
    assert union_box([]) is None
    assert union_box([[1, 2, 5, 6], [0, 4, 3, 9]]) == (0.0, 2.0, 5.0, 9.0)


def test_crop_box_pil_and_tensor_agree():
    img = _image()
    t = torch.arange(40 * 60).reshape(1, 40, 60)
    assert crop_box(img, (10, 5, 30, 25)).size == (20, 20)
    assert crop_box(t, (10, 5, 30, 25)).shape == (1, 20, 20)
    assert torch.equal(crop_box(t, (10, 5, 30, 25))[0, 0, 0], t[0, 5, 10])
    # padding grows the box, clipped to the image
    assert crop_box(img, (10, 5, 30, 25), padding=0.25).size == (30, 30)
    assert crop_box(img, (0, 0, 60, 40), padding=0.5).size == (60, 40)


@pytest.mark.parametrize("box", [None, (10, 10, 11, 11), (70, 50, 90, 60), (30, 20, 30, 35)])
def test_unusable_boxes_fall_back_to_the_full_frame(box):
    img = _image()
    assert crop_box(img, box) is img


def test_jitter_box_moves_and_rescales_within_its_amount():
    box = (20.0, 10.0, 60.0, 30.0)  # 40 x 20, centre (40, 20)
    assert jitter_box(box, 0.0, np.random.default_rng(0)) == box
    assert jitter_box(None, 0.3, np.random.default_rng(0)) is None
    same = jitter_box(box, 0.2, np.random.default_rng(7)), jitter_box(box, 0.2, np.random.default_rng(7))
    assert same[0] == same[1]
    seen = [jitter_box(box, 0.2, np.random.default_rng(s)) for s in range(200)]
    assert len(set(seen)) == 200
    for x1, y1, x2, y2 in seen:
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        assert abs(cx - 40) <= 0.2 * 40 + 1e-6 and abs(cy - 20) <= 0.2 * 20 + 1e-6
        assert np.exp(-0.2) * 40 - 1e-6 <= w <= np.exp(0.2) * 40 + 1e-6
        assert np.exp(-0.2) * 20 - 1e-6 <= h <= np.exp(0.2) * 20 + 1e-6
    # the draws cover the range: some boxes grow, some shrink, centres move both ways
    widths = [x2 - x1 for x1, _, x2, _ in seen]
    assert min(widths) < 40 * np.exp(-0.15) and max(widths) > 40 * np.exp(0.15)


def _product_frame():
    """A grey frame with a white product at (50, 30)-(90, 90): its box."""
    img = Image.new("RGB", (160, 120), (90, 90, 90))
    ImageDraw.Draw(img).rectangle([50, 30, 89, 89], fill=(255, 255, 255))
    return img, tv_tensors.BoundingBoxes(torch.tensor([[50.0, 30.0, 90.0, 90.0]]), format="XYXY", canvas_size=(120, 160))


def test_detection_training_crops_keep_the_box_on_the_product():
    """Random crops and flips move the box with the pixels: the box still frames the product."""
    tf = build_detection_transform(True, color_jitter=0.0, crop_scale_min=0.3)
    img, boxes = _product_frame()
    sizes = set()
    for seed in range(40):
        with seeded(seed):
            out, target = tf(img, {"boxes": boxes, "labels": torch.ones(1, dtype=torch.int64)})
        sizes.add(tuple(out.shape[-2:]))
        assert out.dtype == torch.float32 and len(target["boxes"]) == 1
        x1, y1, x2, y2 = (int(round(float(v))) for v in target["boxes"][0])
        inside = out[:, y1:y2, x1:x2]
        assert inside.numel() > 0 and inside.mean() > 0.97  # only product pixels in the box
        rest = out.clone()
        rest[:, y1:y2, x1:x2] = 0
        assert (rest > 0.9).sum() == 0  # no product pixel outside it
    assert len(sizes) > 3  # frames were cropped to several sizes


def test_detection_colour_jitter_changes_colours_not_boxes():
    img, boxes = _product_frame()
    plain = build_detection_transform(True, hflip=False)
    jittered = build_detection_transform(True, hflip=False, color_jitter=0.4)
    target = {"boxes": boxes, "labels": torch.ones(1, dtype=torch.int64)}
    with seeded(3):
        a, ta = plain(img, target)
    with seeded(3):
        b, tb = jittered(img, target)
    assert torch.equal(ta["boxes"], tb["boxes"]) and a.shape == b.shape
    assert not torch.allclose(a, b)
    evaluation = build_detection_transform(False, color_jitter=0.4, crop_scale_min=0.3)
    c, tc = evaluation(img, target)
    assert torch.equal(c, a) and torch.equal(tc["boxes"], boxes)  # evaluation: no augmentation
