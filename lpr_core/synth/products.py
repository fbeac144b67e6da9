"""Procedural products: a :class:`ProductLook` and the RGBA sprite drawn from it.

A product is a silhouette from a shape family (a bottle, a shoe, a t-shirt, ...) filled with a
surface pattern in colours of one colour family, with parts (cap, sole, strap, screen), a logo
glyph and shading. Two products of one category and colour family still differ in their
pattern, its scale and angle, the secondary colours, the logo and the shape parameters, which is
what makes a livestream's gallery a set of near-duplicates.

Sprites are drawn upright and frontal; the frame renderer warps them (see :mod:`.render`).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lpr_core.synth.vocab import COLOUR_FAMILIES, LOGOS, PATTERNS

__all__ = ["RGB", "ProductLook", "FAMILY_ASPECTS", "random_look", "render_sprite", "family_colour"]

RGB = tuple[int, int, int]

#: Longest side of a canonical sprite in pixels.
SPRITE_SIZE = 176

#: shape family -> (min, max) width/height ratio of its upright sprite.
FAMILY_ASPECTS: dict[str, tuple[float, float]] = {
    "tshirt": (1.0, 1.25), "dress": (0.6, 0.8), "trousers": (0.5, 0.65), "shoe": (1.6, 2.0),
    "bottle": (0.36, 0.5), "jar": (1.0, 1.3), "box": (0.7, 1.3), "pouch": (0.65, 0.85),
    "handbag": (1.1, 1.4), "jewel": (0.75, 0.95), "watch": (0.45, 0.55), "phone": (0.48, 0.56),
    "lipstick": (0.26, 0.33), "can": (0.55, 0.65), "ball": (1.0, 1.0), "pillow": (1.0, 1.3),
    "hat": (1.2, 1.5), "suitcase": (0.6, 0.72), "vase": (0.5, 0.7), "appliance": (0.9, 1.2),
    "pot": (1.3, 1.7), "book": (0.68, 0.78), "bear": (0.75, 0.85), "spray": (0.4, 0.5),
    "glasses": (2.2, 2.6), "chair": (0.7, 0.85),
}
_CYLINDERS = {"bottle", "can", "lipstick", "vase", "jar", "spray", "pot"}


@dataclass(frozen=True)
class ProductLook:
    """Everything that defines how one product instance looks.

    Attributes:
        family: shape family (a key of :data:`FAMILY_ASPECTS`).
        aspect: width / height of the upright sprite.
        shape: four family-specific shape parameters in [0, 1].
        colour_family: the name of the body's colour family.
        body, second, accent: the three colours of the product.
        pattern: surface pattern of the body (one of :data:`~.vocab.PATTERNS`).
        pattern_params: scale, angle and phase of the pattern, each in [0, 1].
        logo: glyph printed on the body (one of :data:`~.vocab.LOGOS`).
        logo_colour: the glyph's colour.
        logo_uv: the glyph's centre, relative to the body's bounding box.
        logo_size: the glyph's size relative to the body's smaller side.
        gold: metal parts are gold rather than silver.
        seed: seed of the pattern's random details (flowers).
    """

    family: str
    aspect: float
    shape: tuple[float, float, float, float]
    colour_family: str
    body: RGB
    second: RGB
    accent: RGB
    pattern: str
    pattern_params: tuple[float, float, float]
    logo: str
    logo_colour: RGB
    logo_uv: tuple[float, float]
    logo_size: float
    gold: bool
    seed: int


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def family_colour(rng: np.random.Generator, family: str) -> RGB:
    """A colour drawn from a colour family, with jitter in hue, saturation and value."""
    hue, sat, val, _ = COLOUR_FAMILIES[family]
    if hue is None:  # neutrals: tiny random tint
        return _hsv(rng.random(), rng.uniform(0.0, 0.08), val + rng.uniform(-0.07, 0.07))
    return _hsv(hue + rng.uniform(-0.025, 0.025), sat + rng.uniform(-0.15, 0.12), val + rng.uniform(-0.12, 0.08))


def random_look(rng: np.random.Generator, family: str, colour_family: str) -> ProductLook:
    """Draw a random product instance of a shape family in a colour family."""
    lo, hi = FAMILY_ASPECTS[family]
    body = family_colour(rng, colour_family)
    fams = [f for f in COLOUR_FAMILIES if f != colour_family]
    second = family_colour(rng, str(rng.choice(fams)))
    accent = family_colour(rng, str(rng.choice(fams)))
    return ProductLook(
        family=family,
        aspect=float(rng.uniform(lo, hi)),
        shape=tuple(float(x) for x in rng.random(4)),  # type: ignore[arg-type]
        colour_family=colour_family,
        body=body,
        second=second,
        accent=accent,
        pattern=str(rng.choice(PATTERNS)),
        pattern_params=tuple(float(x) for x in rng.random(3)),  # type: ignore[arg-type]
        logo=str(rng.choice(LOGOS)),
        logo_colour=family_colour(rng, str(rng.choice(fams))),
        logo_uv=(float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.25, 0.75))),
        logo_size=float(rng.uniform(0.22, 0.42)),
        gold=bool(rng.random() < 0.5),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


# --- shape families ---------------------------------------------------------------------------
# Each family draws filled masks onto layers: ``layer(role)`` returns an ImageDraw on a new "L"
# mask; roles are coloured by _ROLE_COLOURS (or the pattern for "body"). Layers are composited in
# the order they are created. Shapes touch all four sides of the sprite so that the sprite's
# rectangle is the product's bounding box.

Layer = Callable[[str], ImageDraw.ImageDraw]


def _rrect(d: ImageDraw.ImageDraw, box: tuple[float, float, float, float], r: float) -> None:
    d.rounded_rectangle([round(v) for v in box], radius=max(1, round(r)), fill=255)


def _tshirt(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    cw = W * (0.22 + 0.12 * p[0])
    sl = H * (0.28 + 0.12 * p[1])
    hem = W * 0.05 * p[2]
    layer("body").polygon([(W / 2 - cw / 2, 0), (W / 2 + cw / 2, 0), (W * 0.78, H * 0.05), (W, sl),
                           (W * 0.87, sl + H * 0.13), (W * 0.78, sl + H * 0.02), (W * 0.78 + hem, H),
                           (W * 0.22 - hem, H), (W * 0.22, sl + H * 0.02), (W * 0.13, sl + H * 0.13), (0, sl),
                           (W * 0.22, H * 0.05)], fill=255)
    d = layer("accent")
    d.ellipse([W / 2 - cw / 2, -H * 0.09, W / 2 + cw / 2, H * 0.1], fill=255)
    if p[3] > 0.5:  # cuffs
        d.polygon([(W, sl), (W * 0.96, sl + H * 0.06), (W * 0.83, sl + H * 0.07), (W * 0.87, sl + H * 0.13)], fill=255)
        d.polygon([(0, sl), (W * 0.04, sl + H * 0.06), (W * 0.17, sl + H * 0.07), (W * 0.13, sl + H * 0.13)], fill=255)


def _dress(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    waist = H * (0.3 + 0.1 * p[0])
    layer("body").polygon([(W * 0.3, 0), (W * 0.4, 0), (W * 0.5, H * 0.1), (W * 0.6, 0), (W * 0.7, 0),
                           (W * 0.68, waist), (W, H), (0, H), (W * 0.32, waist)], fill=255)
    if p[1] > 0.35:
        layer("accent").rectangle([W * 0.3, waist - H * 0.03, W * 0.7, waist + H * 0.03], fill=255)
    if p[2] > 0.5:
        layer("second").polygon([(W * 0.04, H * 0.94), (W * 0.96, H * 0.94), (W, H), (0, H)], fill=255)


def _trousers(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    gap = W * (0.02 + 0.05 * p[0])
    layer("body").polygon([(W * 0.04, 0), (W * 0.96, 0), (W, H * 0.3), (W, H), (W / 2 + gap + W * 0.05, H),
                           (W / 2, H * (0.32 + 0.1 * p[1])), (W / 2 - gap - W * 0.05, H), (0, H), (0, H * 0.3)],
                          fill=255)
    layer("accent").rectangle([W * 0.04, 0, W * 0.96, H * 0.06], fill=255)


def _shoe(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    top = H * 0.25 * p[0]
    layer("body").polygon([(0, H * 0.3), (W * 0.1, top + H * 0.08), (W * 0.3, H * 0.25), (W * 0.42, 0),
                           (W * 0.56, H * 0.12), (W * 0.82, H * 0.42), (W, H * 0.62), (W, H * 0.86), (0, H * 0.86)],
                          fill=255)
    _rrect(layer("sole"), (0, H * 0.78, W, H), H * 0.08)
    d = layer("accent")
    for i in range(4):
        x = W * (0.44 + 0.07 * i)
        d.line([(x, H * (0.18 + 0.08 * i)), (x + W * 0.05, H * (0.22 + 0.08 * i))], fill=255, width=max(2, round(H * 0.04)))
    if p[1] > 0.5:
        d.polygon([(W * 0.05, H * 0.6), (W * 0.5, H * 0.45), (W * 0.75, H * 0.6)], fill=255)


def _bottle(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    nw = W * (0.3 + 0.25 * p[0])
    sy = H * (0.18 + 0.12 * p[1])
    ch = H * (0.07 + 0.06 * p[2])
    d = layer("body")
    _rrect(d, (0, sy, W, H), W * 0.18)
    d.polygon([(W / 2 - nw * 0.4, sy * 0.6), (W / 2 + nw * 0.4, sy * 0.6), (W * 0.9, sy + H * 0.03),
               (W * 0.1, sy + H * 0.03)], fill=255)
    d.rectangle([W / 2 - nw * 0.4, ch, W / 2 + nw * 0.4, sy], fill=255)
    layer("metal" if p[3] > 0.5 else "accent").rectangle([W / 2 - nw / 2, 0, W / 2 + nw / 2, ch], fill=255)
    if p[3] < 0.7:
        layer("second").rectangle([0, H * 0.5, W, H * 0.78], fill=255)


def _jar(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    lid = H * (0.2 + 0.1 * p[0])
    _rrect(layer("body"), (0, lid * 0.8, W, H), W * 0.12)
    _rrect(layer("metal" if p[1] > 0.5 else "accent"), (W * 0.05, 0, W * 0.95, lid), W * 0.05)
    if p[2] > 0.4:
        layer("second").rectangle([0, H * 0.55, W, H * 0.72], fill=255)


def _box(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    dd = min(W, H) * (0.1 + 0.12 * p[0])
    layer("body").rectangle([0, dd, W - dd, H], fill=255)
    layer("lighter").polygon([(0, dd), (dd, 0), (W, 0), (W - dd, dd)], fill=255)
    layer("darker").polygon([(W - dd, dd), (W, 0), (W, H - dd), (W - dd, H)], fill=255)
    if p[1] > 0.5:
        layer("second").rectangle([0, H * 0.7, W - dd, H * 0.82], fill=255)


def _pouch(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    n = 8 + int(6 * p[0])
    pts = [(W * i / n, 0 if i % 2 == 0 else H * 0.05) for i in range(n + 1)]
    pts += [(W * (n - i) / n, H if i % 2 == 0 else H * 0.95) for i in range(n + 1)]
    layer("body").polygon(pts, fill=255)
    if p[1] > 0.5:
        layer("glass").ellipse([W * 0.25, H * 0.55, W * 0.75, H * 0.85], fill=255)
    layer("accent").rectangle([0, H * 0.05, W, H * 0.12], fill=255)


def _handbag(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    top = H * (0.28 + 0.08 * p[0])
    layer("accent").arc([W * 0.25, 0, W * 0.75, top * 2], 180, 360, fill=255, width=max(3, round(W * 0.045)))
    _rrect(layer("body"), (0, top, W, H), W * 0.06)
    if p[1] > 0.4:
        layer("second").polygon([(0, top), (W, top), (W * 0.5, top + (H - top) * 0.45)], fill=255)
    layer("metal").rectangle([W * 0.46, top + (H - top) * 0.38, W * 0.54, top + (H - top) * 0.5], fill=255)


def _jewel(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    layer("metal").arc([0, -H * 0.6, W, H * 0.62], 0, 180, fill=255, width=max(3, round(W * 0.035)))
    r = W * (0.18 + 0.1 * p[0])
    cx, cy = W / 2, H - r
    d = layer("body")
    if p[1] < 0.33:
        d.ellipse([cx - r, cy - r, cx + r, H], fill=255)
    elif p[1] < 0.66:
        d.polygon([(cx, cy - r), (cx + r, cy), (cx, H), (cx - r, cy)], fill=255)
    else:
        d.polygon([(cx - r, cy - r * 0.6), (cx + r, cy - r * 0.6), (cx, H)], fill=255)
    layer("metal").ellipse([cx - r * 0.3, cy - r * 1.25, cx + r * 0.3, cy - r * 0.65], fill=255)


def _watch(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    _rrect(layer("body"), (W * 0.18, 0, W * 0.82, H), W * 0.1)
    c = H / 2
    if p[0] > 0.5:
        layer("metal").ellipse([0, c - W / 2, W, c + W / 2], fill=255)
        layer("accent").ellipse([W * 0.1, c - W * 0.4, W * 0.9, c + W * 0.4], fill=255)
    else:
        _rrect(layer("metal"), (0, c - W * 0.55, W, c + W * 0.55), W * 0.15)
        _rrect(layer("accent"), (W * 0.1, c - W * 0.45, W * 0.9, c + W * 0.45), W * 0.1)
    d = layer("dark")
    a = p[1] * 2 * math.pi
    d.line([(W / 2, c), (W / 2 + W * 0.3 * math.cos(a), c + W * 0.3 * math.sin(a))], fill=255, width=2)
    d.line([(W / 2, c), (W / 2 + W * 0.22 * math.cos(a * 3), c + W * 0.22 * math.sin(a * 3))], fill=255, width=3)


def _phone(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    _rrect(layer("body"), (0, 0, W, H), W * 0.14)
    if p[0] > 0.5:  # front: screen with app icons
        _rrect(layer("screen"), (W * 0.06, H * 0.04, W * 0.94, H * 0.96), W * 0.1)
        d = layer("accent")
        for i in range(3):
            for j in range(4):
                x, y = W * (0.16 + 0.26 * i), H * (0.12 + 0.14 * j)
                _rrect(d, (x, y, x + W * 0.16, y + W * 0.16), W * 0.04)
    else:  # back: camera module
        _rrect(layer("dark"), (W * 0.08, H * 0.04, W * 0.5, H * 0.24), W * 0.08)
        d = layer("glass")
        for j in range(2):
            y = H * (0.06 + 0.09 * j)
            d.ellipse([W * 0.14, y, W * 0.3, y + W * 0.16], fill=255)


def _lipstick(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    _rrect(layer("body"), (0, H * 0.45, W, H), W * 0.12)
    layer("metal").rectangle([0, H * 0.4, W, H * 0.47], fill=255)
    layer("accent").polygon([(W * 0.15, H * 0.4), (W * 0.85, H * 0.4), (W * 0.85, H * (0.08 + 0.1 * p[0])),
                             (W * 0.15, 0)], fill=255)


def _can(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    d = layer("body")
    d.rectangle([0, H * 0.06, W, H * 0.94], fill=255)
    d.ellipse([0, H * 0.88, W, H], fill=255)
    layer("metal").ellipse([0, 0, W, H * 0.12], fill=255)
    if p[0] > 0.5:
        layer("second").rectangle([0, H * 0.2, W, H * 0.3], fill=255)


def _ball(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    layer("body").ellipse([0, 0, W, H], fill=255)
    size = (round(W) + 1, round(H) + 1)
    seams = Image.new("L", size, 0)
    d = ImageDraw.Draw(seams)
    w = max(2, round(W * 0.02))
    d.line([(0, H / 2), (W, H / 2)], fill=255, width=w)
    d.arc([W * (0.1 + 0.2 * p[0]), 0, W * (0.9 + 0.6 * p[0]), H], 90, 270, fill=255, width=w)
    d.arc([-W * (0.3 + 0.6 * p[0]), 0, W * (0.5 - 0.2 * p[0]), H], 270, 450, fill=255, width=w)
    inside = Image.new("L", size, 0)
    ImageDraw.Draw(inside).ellipse([w, w, W - w, H - w], fill=255)
    layer("dark").bitmap((0, 0), Image.fromarray(np.minimum(np.asarray(seams), np.asarray(inside))), fill=255)


def _pillow(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    k = 0.04 + 0.06 * p[0]
    pts = []
    for side in range(4):
        for i in range(8):
            t = i / 8
            bow = k * math.sin(math.pi * t)
            x, y = [(t, bow), (1 - bow, t), (1 - t, 1 - bow), (bow, 1 - t)][side]
            pts.append((x * W, y * H))
    layer("body").polygon(pts, fill=255)
    if p[1] > 0.5:
        layer("accent").ellipse([W * 0.46, H * 0.46, W * 0.54, H * 0.54], fill=255)


def _hat(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    d = layer("body")
    d.ellipse([W * 0.18, 0, W * 0.82, H * 1.4], fill=255)
    d.rectangle([0, H * 0.72, W, H], fill=0)
    layer("accent" if p[0] > 0.5 else "body").ellipse([0, H * 0.62, W, H], fill=255)
    layer("second").rectangle([W * 0.2, H * 0.52, W * 0.8, H * 0.66], fill=255)


def _suitcase(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    layer("dark").rectangle([W * 0.35, 0, W * 0.65, H * 0.1], fill=255, outline=255)
    _rrect(layer("body"), (0, H * 0.07, W, H * 0.94), W * 0.08)
    d = layer("darker")
    for i in range(3 + int(p[0] * 3)):
        x = W * (0.15 + 0.7 * i / (2 + int(p[0] * 3)))
        d.rectangle([x - 1, H * 0.12, x + 1, H * 0.9], fill=255)
    d2 = layer("dark")
    d2.ellipse([W * 0.04, H * 0.9, W * 0.2, H], fill=255)
    d2.ellipse([W * 0.8, H * 0.9, W * 0.96, H], fill=255)


def _vase(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    neck = 0.12 + 0.1 * p[0]
    belly = 0.35 + 0.3 * p[1]
    base = 0.22 + 0.1 * p[2]
    right, left = [], []
    for i in range(33):
        t = i / 32
        s = max(0.0, (t - 0.15) / 0.85)
        if t < 0.15:
            hw = neck
        elif s < belly:
            hw = neck + (0.5 - neck) * math.sin(math.pi / 2 * s / belly)
        else:
            hw = base + (0.5 - base) * math.cos(math.pi / 2 * (s - belly) / (1 - belly))
        right.append((W * (0.5 + hw), H * t))
        left.append((W * (0.5 - hw), H * t))
    layer("body").polygon(right + left[::-1], fill=255)
    layer("accent").rectangle([W * (0.5 - neck), 0, W * (0.5 + neck), H * 0.05], fill=255)


def _appliance(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    _rrect(layer("body"), (0, H * 0.2, W, H), W * 0.18)
    d = layer("accent" if p[0] > 0.5 else "metal")
    d.chord([W * 0.05, 0, W * 0.95, H * 0.55], 180, 360, fill=255)
    _rrect(layer("dark"), (W * 0.3, H * 0.55, W * 0.7, H * 0.75), W * 0.04)
    d2 = layer("light")
    for i in range(3):
        x = W * (0.37 + 0.1 * i)
        d2.ellipse([x, H * 0.62, x + W * 0.05, H * 0.62 + W * 0.05], fill=255)


def _pot(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    _rrect(layer("body"), (W * 0.14, H * 0.25, W * 0.86, H), W * 0.08)
    d = layer("dark")
    d.rectangle([0, H * 0.34, W * 0.15, H * 0.44], fill=255)
    d.rectangle([W * 0.85, H * 0.34, W, H * 0.44], fill=255)
    d.ellipse([W * 0.45, 0, W * 0.55, H * 0.14], fill=255)
    layer("metal" if p[0] > 0.4 else "glass").ellipse([W * 0.1, H * 0.1, W * 0.9, H * 0.34], fill=255)


def _book(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    layer("body").rectangle([W * 0.06, 0, W, H], fill=255)
    layer("darker").rectangle([0, 0, W * 0.1, H], fill=255)
    d = layer("second")
    d.rectangle([W * 0.2, H * 0.1, W * 0.9, H * (0.16 + 0.04 * p[0])], fill=255)
    d.rectangle([W * 0.2, H * 0.22, W * 0.7, H * 0.26], fill=255)
    if p[1] > 0.5:
        layer("light").rectangle([W * 0.2, H * 0.7, W * 0.9, H * 0.9], fill=255)


def _bear(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    d = layer("body")
    d.ellipse([W * 0.05, 0, W * 0.35, H * 0.24], fill=255)
    d.ellipse([W * 0.65, 0, W * 0.95, H * 0.24], fill=255)
    d.ellipse([W * 0.15, H * 0.05, W * 0.85, H * 0.5], fill=255)
    d.ellipse([W * 0.1, H * 0.42, W * 0.9, H], fill=255)
    d.ellipse([0, H * 0.48, W * 0.3, H * 0.72], fill=255)
    d.ellipse([W * 0.7, H * 0.48, W, H * 0.72], fill=255)
    layer("second").ellipse([W * 0.38, H * 0.28, W * 0.62, H * 0.45], fill=255)
    layer("accent").ellipse([W * 0.3, H * 0.58, W * 0.7, H * 0.9], fill=255)
    d2 = layer("dark")
    for x in (0.36, 0.58):
        d2.ellipse([W * x, H * 0.2, W * (x + 0.06), H * 0.25], fill=255)
    if p[0] > 0.5:
        layer("accent").polygon([(W * 0.35, H * 0.47), (W * 0.65, H * 0.47), (W * 0.5, H * 0.53)], fill=255)


def _spray(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    layer("accent" if p[0] > 0.5 else "dark").polygon(
        [(W * 0.15, 0), (W, 0), (W, H * 0.1), (W * 0.62, H * 0.14), (W * 0.58, H * 0.3), (W * 0.35, H * 0.3),
         (W * 0.3, H * 0.14), (0, H * 0.12), (0, H * 0.05)], fill=255)
    _rrect(layer("body"), (0, H * 0.3, W, H), W * 0.15)
    if p[1] > 0.4:
        layer("second").rectangle([0, H * 0.55, W, H * 0.8], fill=255)


def _glasses(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    g = layer("glass")
    g.ellipse([W * 0.03, H * 0.05, W * 0.45, H], fill=255)
    g.ellipse([W * 0.55, H * 0.05, W * 0.97, H], fill=255)
    d = layer("body")
    w = max(3, round(H * (0.08 + 0.08 * p[0])))
    d.ellipse([W * 0.03, H * 0.05, W * 0.45, H], outline=255, width=w)
    d.ellipse([W * 0.55, H * 0.05, W * 0.97, H], outline=255, width=w)
    d.rectangle([W * 0.43, H * 0.3, W * 0.57, H * 0.3 + w], fill=255)
    d.rectangle([0, 0, W * 0.08, H * 0.05 + w], fill=255)
    d.rectangle([W * 0.92, 0, W, H * 0.05 + w], fill=255)


def _chair(layer: Layer, W: float, H: float, p: tuple[float, ...]) -> None:
    _rrect(layer("body"), (W * 0.1, 0, W * 0.9, H * 0.45), W * 0.1)
    layer("body").polygon([(W * 0.06, H * 0.5), (W * 0.94, H * 0.5), (W, H * 0.62), (0, H * 0.62)], fill=255)
    d = layer("darker" if p[0] > 0.5 else "dark")
    lw = W * (0.05 + 0.04 * p[1])
    for x in (0.0, W - lw, W * 0.25, W * 0.75 - lw):
        d.rectangle([x, H * 0.6, x + lw, H], fill=255)


_FAMILIES: dict[str, Callable[[Layer, float, float, tuple[float, ...]], None]] = {
    "tshirt": _tshirt, "dress": _dress, "trousers": _trousers, "shoe": _shoe, "bottle": _bottle, "jar": _jar,
    "box": _box, "pouch": _pouch, "handbag": _handbag, "jewel": _jewel, "watch": _watch, "phone": _phone,
    "lipstick": _lipstick, "can": _can, "ball": _ball, "pillow": _pillow, "hat": _hat, "suitcase": _suitcase,
    "vase": _vase, "appliance": _appliance, "pot": _pot, "book": _book, "bear": _bear, "spray": _spray,
    "glasses": _glasses, "chair": _chair,
}
assert set(_FAMILIES) == set(FAMILY_ASPECTS)


# --- fill ---------------------------------------------------------------------------------------


def _pattern(look: ProductLook, w: int, h: int) -> np.ndarray:
    """The body's surface as an (h, w, 3) float32 array in [0, 255]."""
    s, a, ph = look.pattern_params
    body = np.array(look.body, np.float32)
    second = np.array(look.second, np.float32)
    accent = np.array(look.accent, np.float32)
    period = 9.0 + 22.0 * s
    ang = a * math.pi
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * math.cos(ang) + yy * math.sin(ang)
    v = -xx * math.sin(ang) + yy * math.cos(ang)
    out = np.empty((h, w, 3), np.float32)
    out[:] = body
    kind = look.pattern
    if kind == "stripes":
        m = ((u / period + ph) % 1.0) < 0.4
        out[m] = second
    elif kind == "dots":
        fu = (u / period + ph) % 1.0 - 0.5
        fv = (v / period + ph) % 1.0 - 0.5
        out[fu * fu + fv * fv < 0.07] = second
    elif kind == "checker":
        cu = np.floor(u / period + ph).astype(np.int32)
        cv = np.floor(v / period).astype(np.int32)
        m = (cu + cv) % 2 == 0
        out[m] = 0.5 * body + 0.5 * second
        line = ((u / period + ph) % 1.0) < 0.08
        out[line] = accent
    elif kind == "gradient":
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
        out[:] = body * (1 - t[..., None]) + second * t[..., None]
    elif kind == "zigzag":
        tri = np.abs(((u / period) % 1.0) - 0.5) * period
        m = (((v + tri) / period + ph) % 1.0) < 0.35
        out[m] = second
    elif kind == "floral":
        rng = np.random.default_rng(look.seed)
        n = max(3, int(w * h / (period * period * 2.5)))
        petals = Image.new("L", (w, h), 0)
        centres = Image.new("L", (w, h), 0)
        dp, dc = ImageDraw.Draw(petals), ImageDraw.Draw(centres)
        r = period * 0.35
        for cx, cy in zip(rng.uniform(0, w, n), rng.uniform(0, h, n)):
            for k in range(5):
                px = cx + r * math.cos(k * 1.2566 + ph * 6.28)
                py = cy + r * math.sin(k * 1.2566 + ph * 6.28)
                dp.ellipse([px - r * 0.6, py - r * 0.6, px + r * 0.6, py + r * 0.6], fill=255)
            dc.ellipse([cx - r * 0.4, cy - r * 0.4, cx + r * 0.4, cy + r * 0.4], fill=255)
        out[np.asarray(petals) > 127] = second
        out[np.asarray(centres) > 127] = accent
    elif kind == "bands":
        c1 = 0.25 + 0.25 * s
        c2 = c1 + 0.2 + 0.3 * ph
        out[yy > c1 * h] = second
        out[yy > c2 * h] = accent
    return out


def _metal(look: ProductLook, w: int, h: int) -> np.ndarray:
    base = np.array((212, 175, 80) if look.gold else (190, 192, 198), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = 0.7 + 0.5 * np.abs(np.sin((xx + yy * 0.5) / max(w, 1) * math.pi * 1.5))
    return np.clip(base * t[..., None], 0, 255)


def _scale(c: RGB, k: float) -> tuple[float, float, float]:
    return tuple(min(255.0, v * k) for v in c)  # type: ignore[return-value]


def _logo(d: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float) -> None:
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=255)
    elif kind == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rr * math.cos(ang), cy + rr * math.sin(ang)))
        d.polygon(pts, fill=255)
    elif kind == "diamond":
        d.polygon([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=255)
    elif kind == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=max(2, round(r * 0.35)))
    elif kind == "cross":
        t = r * 0.35
        d.rectangle([cx - r, cy - t, cx + r, cy + t], fill=255)
        d.rectangle([cx - t, cy - r, cx + t, cy + r], fill=255)
    elif kind == "bars":
        t = r * 0.25
        for k in (-1, 0, 1):
            d.rectangle([cx - r, cy + k * 2.2 * t - t / 2, cx + r, cy + k * 2.2 * t + t / 2], fill=255)


def sprite_dims(look: ProductLook, longest: int = SPRITE_SIZE) -> tuple[int, int]:
    """(width, height) of a sprite of ``look`` whose longest side is ``longest``."""
    if look.aspect >= 1:
        return longest, max(8, round(longest / look.aspect))
    return max(8, round(longest * look.aspect)), longest


def render_sprite(look: ProductLook, longest: int = SPRITE_SIZE) -> Image.Image:
    """Draw the upright, frontal RGBA sprite of a product.

    Args:
        look: the product.
        longest: the sprite's longest side in pixels.

    Returns:
        An RGBA image; alpha is the product's silhouette and its bounding box is the whole image
        (up to a pixel of antialiasing).
    """
    w, h = sprite_dims(look, longest)
    ss = 2  # supersampling for smooth edges
    W, H = w * ss, h * ss
    layers: list[tuple[Image.Image, str]] = []

    def layer(role: str) -> ImageDraw.ImageDraw:
        m = Image.new("L", (W, H), 0)
        layers.append((m, role))
        return ImageDraw.Draw(m)

    _FAMILIES[look.family](layer, W - 1, H - 1, look.shape)
    layers = [(m.resize((w, h), Image.Resampling.BOX), role) for m, role in layers]

    rgb = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    body_mask = np.zeros((h, w), np.float32)
    pattern = None
    flat = {
        "accent": look.accent, "second": look.second, "dark": (38, 38, 44), "light": (236, 236, 230),
        "lighter": _scale(look.body, 1.3), "darker": _scale(look.body, 0.62),
        "glass": tuple(0.35 * c + 15 for c in look.second),
        "sole": (232, 230, 225) if look.shape[3] > 0.5 else (45, 42, 40),
    }
    for m, role in layers:
        a = np.asarray(m, np.float32)[..., None] / 255.0
        if role == "body":
            if pattern is None:
                pattern = _pattern(look, w, h)
            src = pattern
            body_mask = np.maximum(body_mask, a[..., 0])
        elif role == "metal":
            src = _metal(look, w, h)
        elif role == "screen":
            t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
            src = np.array(look.second, np.float32) * (1 - t) + np.array(look.accent, np.float32) * t
            src = np.broadcast_to(src * 0.8, (h, w, 3))
        else:
            src = np.array(flat[role], np.float32)
        # "over" compositing in premultiplied colour
        rgb = rgb * (1 - a) + src * a
        alpha = a[..., 0] + alpha * (1 - a[..., 0])

    rgb = rgb / np.maximum(alpha, 1e-6)[..., None]  # back to straight colour

    # logo on the body
    if look.logo != "none" and body_mask.max() > 0:
        ys, xs = np.nonzero(body_mask > 0.5)
        if len(xs):
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            r = look.logo_size * min(x1 - x0, y1 - y0) / 2
            if r >= 2:
                lm = Image.new("L", (W, H), 0)
                cx = (x0 + look.logo_uv[0] * (x1 - x0)) * ss
                cy = (y0 + look.logo_uv[1] * (y1 - y0)) * ss
                _logo(ImageDraw.Draw(lm), look.logo, cx, cy, r * ss)
                la = np.asarray(lm.resize((w, h), Image.Resampling.BOX), np.float32) / 255.0 * body_mask
                rgb = rgb * (1 - la[..., None]) + np.array(look.logo_colour, np.float32) * la[..., None]

    # shading: cylinders get a horizontal profile with a highlight, flat things a soft gradient
    xs = np.linspace(0, 1, w, dtype=np.float32)
    ys = np.linspace(0, 1, h, dtype=np.float32)
    if look.family in _CYLINDERS:
        prof = 0.72 + 0.38 * np.clip(np.sin(np.pi * xs), 0, 1) ** 0.6 + 0.25 * np.exp(-((xs - 0.32) / 0.06) ** 2)
        shade = np.broadcast_to(prof[None, :], (h, w))
    else:
        shade = 1.08 - 0.16 * (xs[None, :] * 0.5 + ys[:, None] * 0.5)
    rgb = rgb * shade[..., None]

    # dark outline along the silhouette
    amask = Image.fromarray((alpha * 255).astype(np.uint8))
    eroded = np.asarray(amask.filter(ImageFilter.MinFilter(3)), np.float32) / 255.0
    edge = np.clip(alpha - eroded, 0, 1)
    rgb = rgb * (1 - 0.45 * edge[..., None])

    out = np.dstack([np.clip(rgb, 0, 255), alpha * 255]).round().astype(np.uint8)
    return Image.fromarray(out, "RGBA")
