"""Procedural products: every family draws a filled silhouette; instances differ."""

from __future__ import annotations

import numpy as np
import pytest

from lpr_core.synth.products import FAMILY_ASPECTS, random_look, render_sprite
from lpr_core.synth.vocab import CATEGORIES, COLOUR_FAMILIES, PATTERNS


@pytest.mark.parametrize("family", sorted(FAMILY_ASPECTS))
def test_family_sprite_fills_its_rectangle(family):
    look = random_look(np.random.default_rng(1), family, "blue")
    sp = render_sprite(look)
    alpha = np.asarray(sp.getchannel("A"))
    ys, xs = np.nonzero(alpha > 127)
    h, w = alpha.shape
    # the silhouette spans (almost) the whole sprite, so the sprite's box is the product's box
    assert xs.min() <= 3 and ys.min() <= 3 and xs.max() >= w - 4 and ys.max() >= h - 4, family
    assert (alpha > 127).mean() > 0.2
    assert abs(w / h - look.aspect) < 0.05 * max(1, look.aspect)


def test_categories_and_vocabularies():
    assert len(CATEGORIES) == 34
    assert [c.category_id for c in CATEGORIES] == list(range(34))
    assert len({c.name for c in CATEGORIES}) == 34
    assert all(f in FAMILY_ASPECTS for c in CATEGORIES for f in c.families)
    used = {f for c in CATEGORIES for f in c.families}
    assert used == set(FAMILY_ASPECTS)


def test_instances_of_one_family_and_colour_differ_but_are_reproducible():
    rng = np.random.default_rng(0)
    looks = [random_look(rng, "bottle", "red") for _ in range(12)]
    sprites = [np.asarray(render_sprite(lk).resize((64, 160))) for lk in looks]
    for i in range(len(sprites)):
        for j in range(i + 1, len(sprites)):
            assert np.abs(sprites[i].astype(int) - sprites[j].astype(int)).mean() > 3
    assert np.array_equal(np.asarray(render_sprite(looks[0])), np.asarray(render_sprite(looks[0])))
    # the body colour stays in its colour family: red hue
    hsv = np.asarray(render_sprite(random_look(np.random.default_rng(3), "can", "red")).convert("RGB"))
    assert hsv[..., 0].mean() > hsv[..., 2].mean()


def test_every_pattern_and_colour_family_renders():
    rng = np.random.default_rng(7)
    for pattern in PATTERNS:
        for colour in COLOUR_FAMILIES:
            look = random_look(rng, "box", colour)
            look = type(look)(**{**look.__dict__, "pattern": pattern})
            sp = render_sprite(look, longest=48)
            assert sp.mode == "RGBA" and max(sp.size) == 48
