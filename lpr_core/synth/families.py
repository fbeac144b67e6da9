"""World families: what a synthetic world looks like besides its size and seed.

A family fixes everything in which worlds of the release's format may differ from one another
without leaving the format: frame geometry, shop image sizes, product sizes, studio style, how
the annotation files are written (list syntax, box precision, boxes past the frame edge), where
the files sit (flat, or in sub-folders as a release is unpacked) and whether per-query slice
labels exist.

- ``default`` is the world ``lpr synth`` has always written (the demo's, and what the defaults
  are tuned on): landscape and some portrait frames of about 300 px, flat files, Python list
  literals, exact integer boxes inside the frame, slice labels in ``_source/clips.json``.
- ``release`` is a world as a user unpacks the LPR4M release: one frame geometry per livestream
  (mostly portrait 720x1280, also 540x960, 1280x720 and 960x720), shop photos of 600-1000 px,
  more small products, a shop-floor scene, ``training_videoinfo`` in JSON list syntax, annotator
  boxes in absolute pixels with two decimals and a little slack, a few percent of boxes past the
  frame edge (products held at the edge of the picture), files in ``train/``, ``test/`` and
  ``test/annotations/``, and no per-query slice labels. The pipeline runs on it with the real-data
  preset (``presets/lpr4m.yaml``); it is also a held-out family the defaults are never tuned on.

A family only changes draws of its own: the ``default`` family's worlds are byte-identical to
what the generator wrote before families existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

__all__ = ["WorldFamily", "FAMILIES", "DEFAULT_FAMILY", "family_of"]

DEFAULT_FAMILY = "default"

#: Where the release's files go when it is unpacked (kind -> folder under the world).
_RELEASE_LAYOUT = MappingProxyType({
    "videoinfo": "train",
    "train_frame_urls": "train",
    "train_image_urls": "train",
    "test_frame_urls": "test",
    "test_image_urls": "test",
    "test_asr": "test/annotations",
    "test_titles": "test/annotations",
    "test_gt_images": "test/annotations",
    "test_frame_boxes": "test/annotations",
    "test_gallery": "test/annotations",
})


@dataclass(frozen=True)
class WorldFamily:
    """How the worlds of a family look (see the module docstring).

    Attributes:
        name: the family's name (``lpr synth --family``).
        scene_style: the studio of every livestream (:data:`lpr_core.synth.render.SCENE_STYLES`).
        stream_frame_sizes: ``((width, height), weight)`` choices of one frame size per
            livestream; empty: the default world's size drawn per clip.
        gallery_sizes: shop image sizes to choose from; empty: the default 232-288 px squares-ish.
        scale_p: probabilities of the small, medium and large product scale types.
        pose_margin: ``ClipPlan.margin``: how far from the frame edges products are held.
        edge_rate: share of a livestream's clips (at least one) whose product drifts past the left or
            right frame edge late in the clip.
        edge_out: range of the share of the product's width past the edge at the end of such a clip.
        list_syntax: ``training_videoinfo`` list columns: ``python`` or ``json``.
        box_decimals: None for the exact integer boxes of the rendered silhouette; else annotator
            boxes, rounded to this many decimals, each side moved out by up to ``box_slack`` of
            the box's side, the whole product when it is past the edge.
        box_slack: see ``box_decimals``.
        layout: LPR4M file kind -> folder under the world (absent: the top level).
        slice_labels: write the per-clip truth ``_source/clips.json`` (the slice labels the
            ``prepare`` stage can join to the test queries).
    """

    name: str
    scene_style: str = "studio"
    stream_frame_sizes: tuple[tuple[tuple[int, int], float], ...] = ()
    gallery_sizes: tuple[tuple[int, int], ...] = ()
    scale_p: tuple[float, float, float] = (0.3, 0.45, 0.25)
    pose_margin: float = 0.03
    edge_rate: float = 0.0
    edge_out: tuple[float, float] = (0.15, 0.4)
    list_syntax: str = "python"
    box_decimals: int | None = None
    box_slack: float = 0.0
    layout: Mapping[str, str] = field(default_factory=dict)
    slice_labels: bool = True

    def stream_frame_size(self, rng: np.random.Generator) -> tuple[int, int] | None:
        """The frame size of a livestream (None, drawing nothing: sizes are drawn per clip)."""
        if not self.stream_frame_sizes:
            return None
        sizes, weights = zip(*self.stream_frame_sizes)
        p = np.asarray(weights, dtype=np.float64)
        return sizes[int(rng.choice(len(sizes), p=p / p.sum()))]

    def gallery_size(self, rng: np.random.Generator) -> tuple[int, int]:
        """The size of one shop image."""
        if not self.gallery_sizes:
            return int(rng.integers(232, 289)), int(rng.integers(232, 289))
        return self.gallery_sizes[int(rng.integers(len(self.gallery_sizes)))]

    def edge_clips(self, rng: np.random.Generator, n_clips: int) -> frozenset[int]:
        """Which of a livestream's ``n_clips`` clips hold the product at the frame edge: ``edge_rate``
        of them, at least one (none, drawing nothing, when the family has no edge clips)."""
        if self.edge_rate <= 0.0 or n_clips == 0:
            return frozenset()
        k = max(1, round(self.edge_rate * n_clips))
        return frozenset(int(i) for i in rng.choice(n_clips, size=k, replace=False))

    def clip_edge_out(self, rng: np.random.Generator) -> float:
        """``ClipPlan.edge_out`` of an edge clip: past the left or right edge by ``edge_out`` of its width."""
        side = 1.0 if rng.random() < 0.5 else -1.0
        return side * float(rng.uniform(*self.edge_out))

    def annotate(self, rng: np.random.Generator, box: tuple[int, int, int, int],
                 extent: tuple[int, int, int, int] | None, size: tuple[int, int]) -> tuple[float, ...]:
        """The box an annotator writes for a frame whose product is visible.

        The annotator boxes the whole product, also its part past the frame edge, a little loosely
        (each side out by up to ``box_slack`` of the box's side, but never past an edge the
        product itself does not cross).

        Args:
            rng: the clip's annotation generator.
            box: the visible box (inside the frame).
            extent: the product's whole silhouette (past the frame edge when held there).
            size: the frame's (width, height).
        """
        if self.box_decimals is None:
            return box
        x1, y1, x2, y2 = (float(v) for v in (extent or box))
        w, h = x2 - x1, y2 - y1
        out = rng.uniform(0.0, self.box_slack, 4) * np.array([w, h, w, h])
        width, height = size
        loose = (x1 - out[0] if x1 < 0 else max(x1 - out[0], 0.0),
                 y1 - out[1] if y1 < 0 else max(y1 - out[1], 0.0),
                 x2 + out[2] if x2 > width else min(x2 + out[2], width),
                 y2 + out[3] if y2 > height else min(y2 + out[3], height))
        return tuple(round(float(v), self.box_decimals) for v in loose)

    def folder(self, kind: str) -> str:
        """The folder of an LPR4M file kind, relative to the world ("" for the top level)."""
        return self.layout.get(kind, "")


#: The families, by name.
FAMILIES: dict[str, WorldFamily] = {
    DEFAULT_FAMILY: WorldFamily(DEFAULT_FAMILY),
    "release": WorldFamily(
        "release",
        scene_style="shopfloor",
        stream_frame_sizes=(((720, 1280), 0.55), ((540, 960), 0.2), ((1280, 720), 0.15), ((960, 720), 0.1)),
        gallery_sizes=((800, 800), (750, 1000), (600, 600), (1000, 1000), (640, 800)),
        scale_p=(0.5, 0.4, 0.1),
        pose_margin=0.08,
        edge_rate=0.1,
        list_syntax="json",
        box_decimals=2,
        box_slack=0.02,
        layout=_RELEASE_LAYOUT,
        slice_labels=False,
    ),
}


def family_of(family: str | WorldFamily) -> WorldFamily:
    """A family by name (or the family itself).

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(family, WorldFamily):
        return family
    if family not in FAMILIES:
        raise ValueError(f"unknown world family {family!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[family]
