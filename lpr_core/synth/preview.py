"""A contact sheet of a world: query clips with their boxes beside their ground-truth images."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from lpr_core import ids
from lpr_core.formats.discovery import find_one
from lpr_core.synth.layout import source_path

__all__ = ["make_contact_sheet"]


def _one(world: Path, kind: str) -> Path:
    return find_one(world, kind)


def make_contact_sheet(world_dir: str | Path, out_png: str | Path, n_clips: int = 6, max_frames: int = 8,
                       cell: int = 160) -> Path:
    """Draw test query clips (boxes in green) next to their ground-truth images, then a gallery row.

    Args:
        world_dir: a world written by :func:`lpr_core.synth.generate_world`.
        out_png: the PNG to write.
        n_clips: query clips to show, one per row.
        max_frames: frames per row.
        cell: size of one thumbnail in pixels.

    Returns:
        The PNG's path.
    """
    world = Path(world_dir)
    gt = json.loads(_one(world, "test_gt_images").read_text())
    boxes = json.loads(_one(world, "test_frame_boxes").read_text())
    gallery = json.loads(_one(world, "test_gallery").read_text())
    frames: dict[str, list[str]] = {}
    for line in _one(world, "test_frame_urls").read_text().split():
        fid = ids.parse_frame_url(line)[1]
        frames.setdefault(fid.clip_id, []).append(str(fid))

    def thumb(item_id: str, item_boxes: list | None = None) -> Image.Image:
        path = source_path(world, item_id)
        im = Image.open(path).convert("RGB")
        d = ImageDraw.Draw(im)
        for b in item_boxes or []:
            d.rectangle([b[0], b[1], b[2] - 1, b[3] - 1], outline=(0, 255, 0), width=2)
        im.thumbnail((cell, cell))
        return im

    clips = list(gt)[:n_clips]
    live = ids.parse_clip_id(clips[0]).live_id if clips else next(iter(gallery))
    rows = [[thumb(gt[c][0])] + [thumb(f, boxes.get(f)) for f in frames[c][:max_frames]] for c in clips]
    rows.append([thumb(i) for i in gallery.get(live, [])[:max_frames + 1]])
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (cols * (cell + 4), len(rows) * (cell + 4)), (20, 20, 20))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            sheet.paste(im, (c * (cell + 4), r * (cell + 4)))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
