"""Frame rendering: exact boxes, occlusion and visibility, reproducible bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lpr_core.synth.layout import source_path
from lpr_core.synth.render import (
    DURATION_BOUNDS,
    SCALE_AREA_BOUNDS,
    ClipPlan,
    duration_type_of,
    random_scene,
    render_clip,
    render_gallery_image,
    scale_type_of,
)
from lpr_core.synth.world import plan_world


def _looks(live):
    return {p.image_id: p.look for p in live.products}


@pytest.fixture(scope="module")
def tiny_plan():
    return plan_world("tiny", 0)


def test_box_is_the_exact_extent_of_the_rendered_product(tiny_plan):
    checked = 0
    for live in tiny_plan:
        for clip in live.clips:
            for fr in render_clip(clip.plan, live.scene, _looks(live), with_masks=True, jpeg=False):
                if fr.box is None:
                    assert fr.mask is None
                    continue
                x1, y1, x2, y2 = fr.box
                ys, xs = np.nonzero(fr.mask)
                # every product pixel lies inside the box, and the box touches the product on all sides
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
                W, H = clip.plan.size
                assert fr.area_fraction == pytest.approx((x2 - x1) * (y2 - y1) / (W * H))
                checked += 1
    assert checked > 50


def test_visible_frames_follow_the_plan_and_the_product_changes_the_pixels(tiny_plan):
    live = tiny_plan[0]
    clip = next(c for c in live.clips if not all(c.plan.visible))
    frames = render_clip(clip.plan, live.scene, _looks(live), jpeg=False, with_masks=True)
    assert [f.box is not None for f in frames] == list(clip.plan.visible)
    # the same clip with the product never shown differs exactly where a product frame has a box
    hidden = ClipPlan(**{**clip.plan.__dict__, "visible": (False,) * len(frames)})
    shown = render_clip(clip.plan, live.scene, _looks(live))
    empty = render_clip(hidden, live.scene, _looks(live))
    for f, s, e in zip(frames, shown, empty):
        a = np.asarray(Image.open(io.BytesIO(s.jpeg)), np.int16)
        b = np.asarray(Image.open(io.BytesIO(e.jpeg)), np.int16)
        if f.box is None:
            continue
        x1, y1, x2, y2 = f.box
        diff = np.abs(a - b).sum(axis=2) > 60
        inside = diff[y1:y2, x1:x2].mean()
        assert inside > 0.3  # the product (not hidden by the hand) changes its box


def test_rendering_reproduces_the_bytes_on_disk(tiny_world):
    plan = plan_world("tiny", 0)
    live = plan[-1]
    clip = live.clips[0]
    for fr in render_clip(clip.plan, live.scene, _looks(live)):
        assert source_path(tiny_world.out_dir, fr.frame_id).read_bytes() == fr.jpeg
    p = live.products[0]
    assert source_path(tiny_world.out_dir, p.image_id).read_bytes() == render_gallery_image(
        p.look, p.gallery_size, p.gallery_seed)


def test_frames_are_low_quality_jpegs_and_gallery_images_clean(tiny_plan):
    live = tiny_plan[0]
    frame = render_clip(live.clips[0].plan, live.scene, _looks(live))[0]
    p = live.products[0]
    shot = render_gallery_image(p.look, p.gallery_size, p.gallery_seed)
    fim = Image.open(io.BytesIO(frame.jpeg))
    gim = Image.open(io.BytesIO(shot))
    # bytes per pixel: noisy low-quality frames vs clean high-quality shots on a plain background
    assert gim.size == p.gallery_size
    corner = np.asarray(gim.convert("RGB"), np.int16)[:12, :12].reshape(-1, 3)
    assert np.ptp(corner, axis=0).max() <= 12  # plain background
    assert len(frame.jpeg) / (fim.width * fim.height) < 0.6


def test_type_thresholds():
    lo, hi = SCALE_AREA_BOUNDS
    assert [scale_type_of(x) for x in (lo / 2, lo, (lo + hi) / 2, hi, 0.9)] == [0, 1, 1, 2, 2]
    lo, hi = DURATION_BOUNDS
    assert [duration_type_of(x) for x in (0.1, lo, lo + 0.01, hi, 1.0)] == [0, 0, 1, 1, 2]


def test_random_scene_is_seeded():
    a = random_scene(np.random.default_rng(5))
    b = random_scene(np.random.default_rng(5))
    assert a == b and a != random_scene(np.random.default_rng(6))
