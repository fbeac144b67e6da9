"""Rendering of livestream frames and shop gallery images.

A frame is a livestream scene (wall, shelves with clutter, a table, a presenter whose face is
masked by a flat ellipse) in which the clip's product is shown under a perspective warp, at the
clip's scale, held by a hand and arm that occlude it, sometimes beside other products of the same
shop, then degraded (lighting, blur, noise, low-quality JPEG). The product's box is measured on
the rendered silhouette, so it is exact.

A gallery image is the same product drawn frontally on a plain background, as a shop photo.

A scene has a style: ``studio`` (the default world's: a wall with posters, shelves, a plant) or
``shopfloor`` (a shop's sales floor: clothes racks, display cubes, a brand banner; another world
family's). A clip may hold its product at the edge of the picture (``ClipPlan.edge_out``): the
product drifts past the left or right edge. Whenever the frame cuts the product, it records both
the visible box and the product's full extent past the edge.

All randomness comes from seeds in the plans, so a plan renders to the same bytes anywhere.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from lpr_core.synth.products import RGB, ProductLook, random_look, render_sprite
from lpr_core.synth.vocab import CATEGORIES, COLOUR_FAMILIES

__all__ = [
    "SceneLook",
    "ClipPlan",
    "FrameRender",
    "random_scene",
    "render_clip",
    "render_gallery_image",
    "scale_type_of",
    "duration_type_of",
    "SCALE_AREA_BOUNDS",
    "SCALE_REQUEST",
    "DURATION_BOUNDS",
    "SCENE_STYLES",
]

Box = tuple[int, int, int, int]

#: Box-area / frame-area thresholds between small|medium and medium|large (median over visible frames).
SCALE_AREA_BOUNDS = (0.06, 0.16)
#: Visible-frame share thresholds between short|medium and medium|long.
DURATION_BOUNDS = (0.4, 0.8)
#: Requested box-area fractions per scale type (inside the bounds, with margin for the warp).
SCALE_REQUEST: dict[int, tuple[float, float]] = {0: (0.025, 0.045), 1: (0.075, 0.12), 2: (0.2, 0.3)}

#: Canvas of a scene's background, per style (both 4:3: portrait frames are narrow crops of it).
_BG_SIZES = {"studio": (480, 360), "shopfloor": (720, 540)}
#: Share of the frames showing a product held at the edge after which it drifts there (``ClipPlan.edge_out``).
_EDGE_FROM = 0.6
SCENE_STYLES = tuple(_BG_SIZES)


def scale_type_of(area_fraction: float) -> int:
    """Scale type code (0 small, 1 medium, 2 large) of a median box-area / frame-area ratio."""
    lo, hi = SCALE_AREA_BOUNDS
    return 0 if area_fraction < lo else (1 if area_fraction < hi else 2)


def duration_type_of(visible_fraction: float) -> int:
    """Visible-duration type code (0 short, 1 medium, 2 long) of a visible-frame share."""
    lo, hi = DURATION_BOUNDS
    return 0 if visible_fraction <= lo else (1 if visible_fraction <= hi else 2)


@dataclass(frozen=True)
class SceneLook:
    """A livestream's studio and presenter."""

    seed: int
    wall: RGB
    wall2: RGB
    table: RGB
    skin: RGB
    shirt: RGB
    hair: RGB
    mask: RGB
    presenter_x: float
    long_hair: bool
    style: str = "studio"


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one clip.

    Attributes:
        clip_id: the clip (video) id.
        frame_ids: ids of its frames, in order.
        size: (width, height) of its frames.
        target: image id of the presented product.
        distractors: image ids of other products of the shop that appear in the clip.
        visible: per frame, whether the target is shown.
        scale_area: requested box-area / frame-area of the target.
        seed: seed of every random choice of the clip.
        edge_out: 0, or the share of the product's width held past the right (> 0) or left (< 0)
            frame edge at the end of the clip: over the last 40% of the frames that show it, the
            product drifts there (the last one shows it past the edge by that share).
        margin: the product's centre keeps half its size plus this share of the frame from each
            edge (a rotated or tilted product may still touch the edge).
    """

    clip_id: str
    frame_ids: tuple[str, ...]
    size: tuple[int, int]
    target: str
    distractors: tuple[str, ...]
    visible: tuple[bool, ...]
    scale_area: float
    seed: int
    edge_out: float = 0.0
    margin: float = 0.03


@dataclass(frozen=True)
class FrameRender:
    """A rendered frame: JPEG bytes and the target's exact box (None when not visible).

    ``box`` is the visible part, inside the frame; ``extent`` the product's whole silhouette in
    frame coordinates, past the frame edge where the frame cuts the product (equal to ``box``
    otherwise; None when not visible).
    """

    frame_id: str
    jpeg: bytes
    box: Box | None
    area_fraction: float
    mask: np.ndarray | None = None
    extent: Box | None = None


def _jit(rng: np.random.Generator, c: RGB, k: float = 0.08) -> RGB:
    return tuple(int(np.clip(v * (1 + rng.uniform(-k, k)), 0, 255)) for v in c)  # type: ignore[return-value]


def random_scene(rng: np.random.Generator) -> SceneLook:
    """Draw a random studio and presenter for a livestream."""
    walls = [(228, 222, 210), (205, 214, 226), (236, 226, 226), (214, 226, 212), (190, 180, 170), (60, 62, 70),
             (242, 240, 236), (226, 210, 190)]
    skins = [(241, 200, 170), (224, 172, 138), (198, 140, 104), (160, 110, 80), (250, 214, 190)]
    hair = [(30, 24, 20), (70, 45, 30), (120, 80, 50), (20, 20, 24), (160, 120, 70)]
    shirts = [(30, 30, 36), (240, 240, 240), (150, 30, 40), (40, 70, 130), (200, 170, 120), (90, 120, 90),
              (230, 150, 170)]
    wall = _jit(rng, walls[int(rng.integers(len(walls)))])
    return SceneLook(
        seed=int(rng.integers(0, 2**31 - 1)),
        wall=wall,
        wall2=_jit(rng, tuple(int(v * 0.85) for v in wall), 0.1),  # type: ignore[arg-type]
        table=_jit(rng, [(150, 110, 75), (235, 235, 235), (90, 70, 55), (200, 200, 205), (120, 120, 125)][int(rng.integers(5))]),
        skin=_jit(rng, skins[int(rng.integers(len(skins)))], 0.05),
        shirt=_jit(rng, shirts[int(rng.integers(len(shirts)))]),
        hair=_jit(rng, hair[int(rng.integers(len(hair)))]),
        mask=[(0, 0, 0), (128, 128, 128), (255, 255, 255), (40, 40, 40)][int(rng.integers(4))],
        presenter_x=float(rng.uniform(0.35, 0.65)),
        long_hair=bool(rng.random() < 0.5),
    )


# --- backgrounds (cached per process) -----------------------------------------------------------

_BG_CACHE: dict[tuple[int, str], Image.Image] = {}
_SPRITE_CACHE: dict[ProductLook, Image.Image] = {}


def _sprite(look: ProductLook) -> Image.Image:
    sp = _SPRITE_CACHE.get(look)
    if sp is None:
        if len(_SPRITE_CACHE) > 512:
            _SPRITE_CACHE.clear()
        sp = _SPRITE_CACHE[look] = render_sprite(look)
    return sp


def _background(scene: SceneLook) -> Image.Image:
    key = (scene.seed, scene.style)
    bg = _BG_CACHE.get(key)
    if bg is not None:
        return bg
    if scene.style not in _BG_SIZES:
        raise ValueError(f"unknown scene style {scene.style!r}; choose one of {', '.join(_BG_SIZES)}")
    img = _studio(scene) if scene.style == "studio" else _shopfloor(scene)
    if len(_BG_CACHE) > 16:
        _BG_CACHE.clear()
    _BG_CACHE[key] = img
    return img


def _studio(scene: SceneLook) -> Image.Image:
    """The default world's studio: a wall with posters and a ring light, shelves, a plant."""
    rng = np.random.default_rng(scene.seed)
    W, H = _BG_SIZES["studio"]
    t = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    arr = np.array(scene.wall, np.float32) * (1 - t) + np.array(scene.wall2, np.float32) * t
    img = Image.fromarray(np.broadcast_to(arr, (H, W, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # wallpaper stripes
        step = int(rng.integers(14, 40))
        c = _jit(rng, scene.wall2, 0.05)
        for x in range(0, W, step):
            d.rectangle([x, 0, x + step // 3, H], fill=c)
    # posters and a ring light
    for _ in range(int(rng.integers(1, 3))):
        x, y = rng.uniform(0, W - 80), rng.uniform(5, H * 0.3)
        w, h = rng.uniform(50, 110), rng.uniform(40, 80)
        d.rectangle([x, y, x + w, y + h], fill=_jit(rng, (200, 200, 200), 0.3))
        for _ in range(4):
            cx, cy = x + rng.uniform(0, w), y + rng.uniform(0, h)
            r = rng.uniform(4, 16)
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        for k in range(3):  # banner text
            d.rectangle([x + 5, y + h - 8 - 7 * k, x + w * rng.uniform(0.4, 0.9), y + h - 4 - 7 * k], fill=(40, 40, 40))
    if rng.random() < 0.6:
        cx, cy, r = rng.uniform(0, W), rng.uniform(0, H * 0.4), rng.uniform(30, 60)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(250, 250, 245), width=int(rng.integers(5, 10)))
    # shelves with clutter, including product-like objects that are in no gallery
    for row in range(int(rng.integers(1, 3))):
        y = H * (0.38 + 0.2 * row) + rng.uniform(-10, 10)
        side = rng.random() < 0.5
        x0, x1 = (0, W * rng.uniform(0.3, 0.45)) if side else (W * rng.uniform(0.55, 0.7), W)
        d.rectangle([x0, y, x1, y + 6], fill=_jit(rng, (120, 90, 60), 0.2))
        x = x0 + 4
        while x < x1 - 20:
            h = rng.uniform(18, 50)
            w = rng.uniform(10, 35)
            if rng.random() < 0.35:
                cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
                look = random_look(rng, str(rng.choice(cat.families)), str(rng.choice(list(COLOUR_FAMILIES))))
                sp = render_sprite(look, longest=int(max(w, h)))
                img.paste(sp, (int(x), int(y - sp.height)), sp)
                x += sp.width + rng.uniform(2, 10)
            else:
                c = tuple(int(v) for v in rng.integers(20, 240, 3))
                if rng.random() < 0.5:
                    d.rectangle([x, y - h, x + w, y], fill=c)
                else:
                    d.ellipse([x, y - h, x + w, y + 2], fill=c)
                x += w + rng.uniform(2, 10)
    if rng.random() < 0.5:  # a plant
        cx = rng.uniform(0, W)
        for _ in range(8):
            a = rng.uniform(-2.6, -0.5)
            d.ellipse([cx + 40 * math.cos(a) - 12, H * 0.62 + 40 * math.sin(a) - 6,
                       cx + 40 * math.cos(a) + 12, H * 0.62 + 40 * math.sin(a) + 6], fill=(50, 120, 60))
        d.rectangle([cx - 14, H * 0.62, cx + 14, H * 0.7], fill=(170, 100, 70))
    return img.filter(ImageFilter.GaussianBlur(0.8))


def _shopfloor(scene: SceneLook) -> Image.Image:
    """A shop's sales floor: a bright banner wall, clothes racks, display cubes with products."""
    rng = np.random.default_rng(scene.seed)
    W, H = _BG_SIZES["shopfloor"]
    img = Image.new("RGB", (W, H), scene.wall)
    d = ImageDraw.Draw(img)
    # ceiling lights and a floor
    for x in np.arange(rng.uniform(20, 60), W, rng.uniform(90, 140)):
        d.rectangle([x, 0, x + 50, 8], fill=(250, 250, 240))
    floor_y = H * rng.uniform(0.68, 0.78)
    d.rectangle([0, floor_y, W, H], fill=_jit(rng, (200, 195, 185), 0.15))
    for x in np.arange(0, W, rng.uniform(40, 80)):  # floor tiles
        d.line([(x, floor_y), (x - 60, H)], fill=_jit(rng, (170, 165, 155), 0.1), width=1)
    # a brand banner: a band of colour with blocks of "text"
    by = H * rng.uniform(0.05, 0.15)
    bh = H * rng.uniform(0.08, 0.14)
    d.rectangle([0, by, W, by + bh], fill=scene.wall2)
    x = rng.uniform(10, 60)
    while x < W - 40:
        w = rng.uniform(14, 40)
        d.rectangle([x, by + bh * 0.3, x + w, by + bh * 0.7], fill=_jit(rng, (250, 250, 250), 0.05))
        x += w + rng.uniform(6, 30)
    # clothes racks: a rail with hanging garments in stripes of colour
    for _ in range(int(rng.integers(2, 4))):
        x0 = rng.uniform(0, W * 0.7)
        x1 = min(W, x0 + rng.uniform(120, 260))
        ry = by + bh + rng.uniform(20, 60)
        d.line([(x0, ry), (x1, ry)], fill=(90, 90, 95), width=3)
        x = x0 + 4
        while x < x1 - 8:
            w = rng.uniform(8, 18)
            h = rng.uniform(70, 150)
            d.rectangle([x, ry + 4, x + w, ry + h], fill=tuple(int(v) for v in rng.integers(30, 235, 3)))
            x += w + rng.uniform(0, 3)
    # display cubes on the floor, some holding products that are in no gallery
    for _ in range(int(rng.integers(2, 5))):
        cw, ch = rng.uniform(60, 130), rng.uniform(50, 110)
        cx = rng.uniform(0, W - cw)
        top = floor_y - ch + rng.uniform(-10, 25)
        d.rectangle([cx, top, cx + cw, top + ch], fill=_jit(rng, (235, 235, 232), 0.08),
                    outline=(150, 150, 150))
        if rng.random() < 0.7:
            cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            look = random_look(rng, str(rng.choice(cat.families)), str(rng.choice(list(COLOUR_FAMILIES))))
            sp = render_sprite(look, longest=int(rng.uniform(30, 60)))
            img.paste(sp, (int(cx + (cw - sp.width) / 2), int(top - sp.height + 2)), sp)
    return img.filter(ImageFilter.GaussianBlur(1.0))


_NOISE: dict[int | tuple[int, int], Image.Image] = {}


def _noise_image(sigma: int, side: int = 400) -> Image.Image:
    """A fixed ``side`` x ``side`` field of Gaussian noise of std ``sigma``, offset by 128, sampled
    at random offsets.

    Seeded by a constant, so it is identical in every process: frames stay deterministic.
    """
    key = sigma if side == 400 else (sigma, side)
    img = _NOISE.get(key)
    if img is None:
        field = np.random.default_rng(20221108).standard_normal((side, side, 3), dtype=np.float32)
        img = _NOISE[key] = Image.fromarray(np.clip(field * sigma + 128, 0, 255).round().astype(np.uint8))
    return img


def _noise_for(sigma: int, size: tuple[int, int]) -> Image.Image:
    """The noise field for frames of ``size``: the 400 px one, or a larger one for large frames."""
    longest = max(size)
    return _noise_image(sigma) if longest <= 400 else _noise_image(sigma, 128 * math.ceil((longest + 64) / 128))


# --- geometry ---------------------------------------------------------------------------------


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 homography mapping four ``src`` points onto four ``dst`` points."""
    a = []
    b = []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    h = np.linalg.solve(np.array(a, np.float64), np.array(b, np.float64))
    return np.append(h, 1.0).reshape(3, 3)


@dataclass(frozen=True)
class _Pose:
    cx: float
    cy: float
    w: float
    h: float
    angle: float
    yaw: float
    pitch: float


def _quad(p: _Pose) -> np.ndarray:
    hw, hh = p.w / 2, p.h / 2
    # yaw shrinks one vertical edge, pitch one horizontal edge: a cheap perspective
    left = 1 - max(p.yaw, 0)
    right = 1 + min(p.yaw, 0)
    top = 1 - max(p.pitch, 0)
    bottom = 1 + min(p.pitch, 0)
    pts = np.array([[-hw * top, -hh * left], [hw * top, -hh * right], [hw * bottom, hh * right],
                    [-hw * bottom, hh * left]], np.float64)
    pts[:, 0] *= 1 - 0.3 * abs(p.yaw)
    c, s = math.cos(p.angle), math.sin(p.angle)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T + np.array([p.cx, p.cy])


def _warp(sprite: Image.Image, quad: np.ndarray, size: tuple[int, int] | None) -> tuple[Image.Image, tuple[int, int]] | None:
    """Warp ``sprite`` onto ``quad`` (frame coords); return the RGBA patch and its offset, or None.

    The patch is cut to the frame of ``size``; with ``size`` None it holds the whole quad, also
    past the frame's edges (the offset may then be negative).
    """
    x0 = math.floor(quad[:, 0].min())
    y0 = math.floor(quad[:, 1].min())
    x1 = math.ceil(quad[:, 0].max()) + 1
    y1 = math.ceil(quad[:, 1].max()) + 1
    if size is not None:
        W, H = size
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    span = max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[3] - quad[0]))
    longest = max(sprite.size)
    if span * 1.5 < longest:  # pre-shrink so bilinear sampling does not alias
        k = span * 1.5 / longest
        sprite = sprite.resize((max(2, round(sprite.width * k)), max(2, round(sprite.height * k))),
                               Image.Resampling.BOX)
    sw, sh = sprite.size
    src = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float64)
    # PIL maps output pixels back to input pixels: homography from the patch's coordinates to the sprite's
    hmat = _homography(quad - np.array([x0, y0]), src)
    coeffs = tuple((hmat.flatten() / hmat[2, 2])[:8])
    patch = sprite.convert("RGBa").transform((x1 - x0, y1 - y0), Image.Transform.PERSPECTIVE, coeffs,
                                             Image.Resampling.BILINEAR).convert("RGBA")
    return patch, (x0, y0)


def _paste(frame: Image.Image, patch: Image.Image, offset: tuple[int, int]) -> None:
    frame.paste(patch, offset, patch)


# --- frames -------------------------------------------------------------------------------------


def _presenter(d: ImageDraw.ImageDraw, scene: SceneLook, px: float, py: float, r: float, H: int) -> None:
    """Draw the presenter (head centre ``px, py``, head radius ``r``), face masked by a flat ellipse."""
    if scene.long_hair:
        d.rounded_rectangle([px - r * 1.15, py - r * 1.1, px + r * 1.15, py + r * 2.2], radius=int(r * 0.8),
                            fill=scene.hair)
    sy = py + r * 1.45
    d.polygon([(px - r * 2.3, sy + r * 0.2), (px - r * 1.2, sy), (px + r * 1.2, sy), (px + r * 2.3, sy + r * 0.2),
               (px + r * 2.8, H + 5), (px - r * 2.8, H + 5)], fill=scene.shirt)
    d.rectangle([px - r * 0.35, py + r * 0.6, px + r * 0.35, sy + r * 0.1], fill=scene.skin)
    d.ellipse([px - r * 1.05, py - r * 1.15, px + r * 1.05, py + r * 0.55], fill=scene.hair)
    d.ellipse([px - r * 0.9, py - r * 0.95, px + r * 0.9, py + r * 1.05], fill=scene.skin)
    # LPR4M masks faces: a flat ellipse
    d.ellipse([px - r * 0.82, py - r * 0.75, px + r * 0.82, py + r * 1.0], fill=scene.mask)


def _hand(d: ImageDraw.ImageDraw, scene: SceneLook, shoulder: tuple[float, float], grip: tuple[float, float],
          r: float, toward: tuple[float, float]) -> None:
    """An arm from ``shoulder`` to a hand at ``grip`` whose fingers point along ``toward``."""
    sx, sy = shoulder
    gx, gy = grip
    ex, ey = (sx + gx) / 2 + r * 0.8, (sy + gy) / 2 + r * 1.2  # elbow
    d.line([(sx, sy), (ex, ey)], fill=scene.shirt, width=max(3, int(r * 1.5)))
    d.line([(ex, ey), (gx, gy)], fill=scene.skin, width=max(3, int(r * 1.1)))
    d.ellipse([ex - r * 0.7, ey - r * 0.7, ex + r * 0.7, ey + r * 0.7], fill=scene.skin)
    d.ellipse([gx - r * 0.8, gy - r * 0.8, gx + r * 0.8, gy + r * 0.8], fill=scene.skin)
    tx, ty = toward
    n = math.hypot(tx, ty) or 1.0
    tx, ty = tx / n, ty / n
    for k in (-1.5, -0.5, 0.5, 1.5):  # fingers over the product
        fx = gx + tx * r * 1.1 - ty * k * r * 0.4
        fy = gy + ty * r * 1.1 + tx * k * r * 0.4
        d.ellipse([fx - r * 0.28, fy - r * 0.28, fx + r * 0.28, fy + r * 0.28], fill=scene.skin)
        d.line([(gx - ty * k * r * 0.4, gy + tx * k * r * 0.4), (fx, fy)], fill=scene.skin, width=max(2, int(r * 0.5)))


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def render_clip(plan: ClipPlan, scene: SceneLook, looks: dict[str, ProductLook], *, with_masks: bool = False,
                jpeg: bool = True) -> list[FrameRender]:
    """Render every frame of a clip.

    Args:
        plan: the clip.
        scene: its livestream's studio.
        looks: product looks by image id; must hold the target and the distractors.
        with_masks: also return the target's rendered alpha (H, W) uint8 per frame (for tests).
        jpeg: encode frames as JPEG (False keeps ``jpeg`` empty; faster for tests of geometry).

    Returns:
        One :class:`FrameRender` per frame, in order.
    """
    rng = np.random.default_rng(plan.seed)
    W, H = plan.size
    n = len(plan.frame_ids)
    bg = _background(scene)

    # camera: a crop of the studio with the frame's aspect ratio
    bw, bh = bg.size
    zoom = rng.uniform(0.7, 0.92)
    cw = min(bw * zoom, bh * zoom * W / H)
    ch = cw * H / W
    cx0 = rng.uniform(0, bw - cw)
    cy0 = rng.uniform(0, bh - ch)
    k = W / cw  # studio px -> frame px
    studio = bg.resize((math.ceil(bw * k), math.ceil(bh * k)), Image.Resampling.BILINEAR)
    head_r = 0.075 * bh * k * rng.uniform(0.9, 1.15)
    px0 = (scene.presenter_x * bw - cx0) * k + rng.uniform(-0.05, 0.05) * W
    py0 = H * rng.uniform(0.2, 0.3)
    table_y = H * rng.uniform(0.78, 0.9)

    # lighting and sensor of the clip
    gain = np.array([rng.uniform(0.78, 1.18)] * 3) * rng.uniform(0.92, 1.08, 3)
    lut = [min(255, int(v * g + 0.5)) for g in gain.tolist() for v in range(256)]
    noise = _noise_for(int(rng.integers(2, 8)), (W, H))
    blur = rng.uniform(0.5, 1.1) if rng.random() < 0.25 else 0.0
    quality = int(rng.integers(28, 58))

    # target pose path: start and end poses, interpolated over the clip
    look = looks[plan.target]
    area = plan.scale_area * W * H
    tw = math.sqrt(area * look.aspect)
    th = tw / look.aspect
    if max(tw, th) > 0.95 * min(W, H):  # keep the product inside the frame
        f = 0.95 * min(W, H) / max(tw, th)
        tw, th = tw * f, th * f

    sprite = _sprite(look)
    if max(sprite.size) > 1.4 * max(tw, th):  # shrink once per clip, not per frame
        k = 1.4 * max(tw, th) / max(sprite.size)
        sprite = sprite.resize((max(2, round(sprite.width * k)), max(2, round(sprite.height * k))),
                               Image.Resampling.BOX)

    def pose() -> _Pose:
        mx = tw / 2 + plan.margin * W
        my = th / 2 + plan.margin * H
        cx = float(np.clip(px0 + rng.uniform(-0.3, 0.3) * W, mx, W - mx))
        cy = float(np.clip(H * rng.uniform(0.45, 0.7), my, H - my))
        return _Pose(cx, cy, tw, th, rng.uniform(-0.3, 0.3), rng.uniform(-0.35, 0.35), rng.uniform(-0.25, 0.25))

    p0, p1 = pose(), pose()
    hand_side = 1.0 if p0.cx >= px0 else -1.0
    edge_shift = 0.0
    if plan.edge_out:  # late in the clip the product drifts to the edge: edge_out of its width past it
        shown = [i for i, v in enumerate(plan.visible) if v]
        edge_at = {i: (k / (len(shown) - 1) if len(shown) > 1 else 1.0) for k, i in enumerate(shown)}
        xs = _quad(p1)[:, 0]
        span = float(xs.max() - xs.min())
        edge_shift = float((W + plan.edge_out * span - xs.max()) if plan.edge_out > 0
                           else (plan.edge_out * span - xs.min()))

    # distractors: static, on the table or held in the other hand
    dist: list[tuple[ProductLook, _Pose]] = []
    for i, did in enumerate(plan.distractors):
        dl = looks[did]
        da = rng.uniform(0.02, 0.07) * W * H
        dw = math.sqrt(da * dl.aspect)
        dh = dw / dl.aspect
        if i == 0 and rng.random() < 0.3:  # held in the other hand
            dcx = px0 - hand_side * rng.uniform(0.15, 0.3) * W
            dcy = H * rng.uniform(0.45, 0.65)
        else:  # on the table
            dcx = rng.uniform(dw / 2, W - dw / 2)
            dcy = table_y - dh / 2 + rng.uniform(-0.05, 0.08) * H
        # keep every distractor inside the frame: the clip's number type counts it
        dcx = min(max(dcx, dw / 2 + 2), W - dw / 2 - 2)
        dcy = min(max(dcy, dh / 2 + 2), H - dh / 2 - 2)
        dist.append((dl, _Pose(float(dcx), float(dcy), dw, dh, rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2),
                                rng.uniform(-0.15, 0.15))))
    in_front = rng.random() < 0.3  # a distractor may occlude the target
    dist_patches = [_warp(_sprite(dl), _quad(dp), (W, H)) for dl, dp in dist]

    out: list[FrameRender] = []
    for i, fid in enumerate(plan.frame_ids):
        t = i / max(n - 1, 1)
        jx, jy = rng.integers(-4, 5, 2)
        ax = int(min(max(round(cx0 * k) + jx, 0), studio.width - W))
        ay = int(min(max(round(cy0 * k) + jy, 0), studio.height - H))
        frame = studio.crop((ax, ay, ax + W, ay + H))
        d = ImageDraw.Draw(frame)
        sway = rng.uniform(-0.015, 0.015) * W
        px, py = px0 + sway + (t - 0.5) * 0.04 * W, py0 + rng.uniform(-2, 2)
        _presenter(d, scene, px, py, head_r, H)
        d.rectangle([0, table_y, W, H], fill=scene.table)
        d.line([(0, table_y), (W, table_y)], fill=tuple(int(v * 0.7) for v in scene.table), width=2)

        for j, patch in enumerate(dist_patches):  # behind the target
            if patch is not None and not (j == 0 and in_front):
                _paste(frame, *patch)
        box = None
        extent = None
        mask = None
        frac = 0.0
        if plan.visible[i]:
            pp = _Pose(_lerp(p0.cx, p1.cx, t) + rng.uniform(-3, 3), _lerp(p0.cy, p1.cy, t) + rng.uniform(-3, 3),
                       tw * rng.uniform(0.96, 1.04), th * rng.uniform(0.96, 1.04), _lerp(p0.angle, p1.angle, t),
                       _lerp(p0.yaw, p1.yaw, t), _lerp(p0.pitch, p1.pitch, t))
            if edge_shift and edge_at[i] > _EDGE_FROM:
                pp = dataclasses.replace(pp, cx=pp.cx + edge_shift * (edge_at[i] - _EDGE_FROM) / (1 - _EDGE_FROM))
            quad = _quad(pp)
            w = _warp(sprite, quad, (W, H))
            if w is not None:
                patch, (ox, oy) = w
                alpha = np.asarray(patch.getchannel("A"))
                ys, xs = np.nonzero(alpha)
                if len(xs):
                    _paste(frame, patch, (ox, oy))
                    # exact box in pixel-edge coordinates: pixels [x1, x2) x [y1, y2)
                    box = (int(ox + xs.min()), int(oy + ys.min()), int(ox + xs.max() + 1), int(oy + ys.max() + 1))
                    frac = (box[2] - box[0]) * (box[3] - box[1]) / (W * H)
                    extent = box
                    if box[0] == 0 or box[1] == 0 or box[2] == W or box[3] == H:  # cut by the frame?
                        full = _warp(sprite, quad, None)
                        if full is not None:
                            fys, fxs = np.nonzero(np.asarray(full[0].getchannel("A")))
                            fx, fy = full[1]
                            extent = (int(fx + fxs.min()), int(fy + fys.min()), int(fx + fxs.max() + 1),
                                      int(fy + fys.max() + 1))
                    if with_masks:
                        mask = np.zeros((H, W), np.uint8)
                        mask[oy:oy + alpha.shape[0], ox:ox + alpha.shape[1]] = alpha
            # the hand grips the product's edge nearest the presenter's shoulder
            shoulder = (px + hand_side * head_r * 1.9, py + head_r * 1.7)
            edge = quad[[1, 2]] if hand_side < 0 else quad[[0, 3]]
            if hand_side > 0:
                edge = quad[[1, 2]] if rng.random() < 0.15 else quad[[2, 3]]
            gx, gy = edge.mean(axis=0) + rng.uniform(-3, 3, 2)
            centre = quad.mean(axis=0)
            _hand(d, scene, shoulder, (float(gx), float(gy)), head_r * rng.uniform(0.45, 0.6),
                  (float(centre[0] - gx), float(centre[1] - gy)))
        if in_front and dist_patches and dist_patches[0] is not None:  # occluding the target
            _paste(frame, *dist_patches[0])

        if blur:
            frame = frame.filter(ImageFilter.BoxBlur(blur))
        frame = frame.point(lut)  # per-channel gain: lighting and white balance
        nx = int(rng.integers(0, noise.width - W + 1))
        ny = int(rng.integers(0, noise.height - H + 1))
        # sensor noise: the field is stored with an offset of 128
        frame = ImageChops.add(frame, noise.crop((nx, ny, nx + W, ny + H)), scale=1.0, offset=-128)
        data = b""
        if jpeg:
            buf = io.BytesIO()
            frame.save(buf, format="JPEG", quality=quality)
            data = buf.getvalue()
        out.append(FrameRender(fid, data, box, frac, mask, extent))
    return out


def render_gallery_image(look: ProductLook, size: tuple[int, int], seed: int) -> bytes:
    """A clean shop photo of a product on a plain background, as JPEG bytes."""
    rng = np.random.default_rng(seed)
    W, H = size
    bgs = [(255, 255, 255), (246, 246, 246), (250, 246, 238), (236, 240, 246), (244, 236, 240), (232, 232, 228)]
    img = Image.new("RGB", (W, H), bgs[int(rng.integers(len(bgs)))])
    sp = _sprite(look)
    fill = rng.uniform(0.68, 0.86)
    k = fill * min(W / sp.width, H / sp.height)
    sp = sp.resize((max(2, round(sp.width * k)), max(2, round(sp.height * k))), Image.Resampling.LANCZOS)
    if rng.random() < 0.3:
        sp = sp.rotate(float(rng.uniform(-6, 6)), Image.Resampling.BICUBIC, expand=True)
    x = (W - sp.width) // 2 + int(rng.integers(-6, 7))
    y = (H - sp.height) // 2 + int(rng.integers(-6, 7))
    shadow = Image.new("L", (W, H), 0)
    ImageDraw.Draw(shadow).ellipse([x + sp.width * 0.1, y + sp.height * 0.92, x + sp.width * 0.9,
                                    y + sp.height * 1.04], fill=70)
    shadow = shadow.filter(ImageFilter.GaussianBlur(5))
    img.paste((120, 120, 120), (0, 0), shadow)
    img.paste(sp, (x, y), sp)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(86, 94)))
    return buf.getvalue()
