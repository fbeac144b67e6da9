"""Transforms: seeded augmentation, eval shapes, box crops with fallback."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lpr_core.data.transforms import build_eval_transform, build_train_transform, crop_box, seeded, union_box


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
