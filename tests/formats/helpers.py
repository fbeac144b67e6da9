"""A small, fully known LPR4M directory written with the project's writers."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from lpr_core import ids
from lpr_core.formats import writers
from lpr_core.formats.records import VideoInfoRow

PREFIX = "http://127.0.0.1:8000/frames/"
IMG_PREFIX = "http://127.0.0.1:8000/images/"


def uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


def make_rows(n: int, seed: int = 0, *, max_frames: int = 12, float_boxes: bool = True) -> list[VideoInfoRow]:
    """``n`` valid videoinfo rows with varied frame counts, boxes (0..2 per frame) and text."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        live = uid(rng)
        start = rng.randrange(10**12, 2 * 10**12)
        clip = ids.make_clip_id(live, start, start + rng.randrange(1000, 200_000))
        n_frames = rng.randint(1, max_frames)
        indices = sorted(rng.sample(range(0, 400), n_frames))
        boxes = []
        for _ in indices:
            k = rng.choice([0, 0, 1, 1, 2])
            frame_boxes = []
            for _ in range(k):
                x1, y1 = rng.uniform(0, 300), rng.uniform(0, 500)
                box = (x1, y1, x1 + rng.uniform(1, 300), y1 + rng.uniform(1, 500))
                frame_boxes.append(tuple(round(v, 2) if float_boxes else float(int(v)) for v in box))
            boxes.append(frame_boxes)
        rows.append(
            VideoInfoRow(
                video_id=clip,
                frame_ids=[ids.make_frame_id(clip, k) for k in indices],
                boxes=boxes,
                image_id=uid(rng),
                image_title=f"商品 标题 {i} 'quoted' \"dq\" [x]",
                category_id=rng.randint(0, 33),
                category_name=rng.choice(["女装", "美妆", "shoes"]),
                asr=rng.choice(["", "大家好 欢迎来到直播间", "asr with [brackets], 'quotes' and \\ slash"]),
                scale_type=rng.randint(0, 2),
                duration_type=rng.randint(0, 2),
                number_type=rng.randint(0, 1),
            )
        )
    return rows


@dataclass
class World:
    """What was written, to compare the readers' tables against."""

    root: Path
    rows: list[VideoInfoRow]
    train_frame_urls: list[str] = field(default_factory=list)
    train_image_urls: list[str] = field(default_factory=list)
    test_frame_urls: list[str] = field(default_factory=list)
    test_image_urls: list[str] = field(default_factory=list)
    asr: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    gt: dict[str, list[str]] = field(default_factory=dict)
    frame_boxes: dict[str, list[tuple]] = field(default_factory=dict)
    gallery: dict[str, list[str]] = field(default_factory=dict)

    def path(self, kind: str) -> Path:
        from lpr_core.formats.readers import find_lpr4m_files

        return find_lpr4m_files(self.root)[kind][0]


def write_world(root: Path, n_train: int = 6, n_test: int = 4, seed: int = 0) -> World:
    """Write every LPR4M file kind into ``root`` (training_videoinfo in two parts)."""
    rng = random.Random(seed + 1)
    rows = make_rows(n_train, seed)
    w = World(root, rows)
    half = len(rows) // 2
    writers.write_videoinfo(root / "training_videoinfo_full_part_00.txt", rows[:half])
    writers.write_videoinfo(root / "training_videoinfo_full_part_01.txt", rows[half:])
    w.train_frame_urls = [ids.frame_url(PREFIX, f) for r in rows for f in r.frame_ids]
    w.train_image_urls = [ids.image_url(IMG_PREFIX, r.image_id) for r in rows]
    writers.write_url_list(root / f"training_frame_url_{len(w.train_frame_urls)}.txt", w.train_frame_urls)
    writers.write_url_list(root / f"training_image_url_{len(w.train_image_urls)}.txt", w.train_image_urls)

    test_rows = make_rows(n_test, seed + 100)
    lives = [uid(rng) for _ in range(2)]
    w.gallery = {live: [uid(rng) for _ in range(3)] for live in lives}
    for k, r in enumerate(test_rows):
        live = lives[k % 2]
        clip = ids.make_clip_id(live, 1000 * k, 1000 * k + 500)
        w.gt[clip] = [w.gallery[live][k % 3]]
        w.asr[clip] = r.asr
        frames = [ids.make_frame_id(clip, i) for i in range(3)]
        w.test_frame_urls += [ids.frame_url(PREFIX, f) for f in frames]
        w.frame_boxes[frames[0]] = [(1.5, 2.0, 30.25, 40.0)]
        w.frame_boxes[frames[1]] = [(0.0, 0.0, 10.0, 10.0), (5.0, 6.0, 7.0, 8.0)]
    images = [i for g in w.gallery.values() for i in g]
    w.titles = {i: f"标题 {n}" for n, i in enumerate(images)}
    w.test_image_urls = [ids.image_url(IMG_PREFIX, i) for i in images]
    writers.write_url_list(root / f"test_frame_url_{len(w.test_frame_urls)}.txt", w.test_frame_urls)
    writers.write_url_list(root / f"test_image_url_{len(w.test_image_urls)}.txt", w.test_image_urls)
    writers.write_test_asr(root / f"test_videoid_asr_{len(w.asr)}.txt", w.asr)
    writers.write_image_titles(root / f"test_image_title_{len(w.titles)}.txt", w.titles)
    writers.write_gt_images(root / f"test_videoid_to_gtimage_{len(w.gt)}.json", w.gt)
    writers.write_frame_boxes(
        root / f"test_frameid2gtbox_{len(w.gt)}_{len(w.frame_boxes)}.json", w.frame_boxes
    )
    writers.write_live_gallery(root / f"test_liveid_to_gallery_{len(w.gallery)}.json", w.gallery)
    return w


def expected_videoinfo(rows: list[VideoInfoRow]) -> list[dict]:
    """The ``VIDEOINFO_SCHEMA`` rows the reader must produce for ``rows`` (boxes as float32)."""
    import numpy as np

    out = []
    for r in rows:
        clip = ids.parse_clip_id(r.video_id)
        indices = [ids.parse_frame_id(f).index for f in r.frame_ids]
        box_frames, boxes = [], []
        for idx, frame_boxes in zip(indices, r.boxes):
            for b in frame_boxes:
                box_frames.append(idx)
                boxes.append([float(np.float32(v)) for v in b])
        out.append(
            {
                "clip_id": r.video_id,
                "live_id": clip.live_id,
                "start_ms": clip.start_ms,
                "end_ms": clip.end_ms,
                "frame_indices": indices,
                "box_frame_indices": box_frames,
                "boxes": boxes,
                "image_id": r.image_id,
                "image_title": " ".join(r.image_title.split()),
                "category_id": r.category_id,
                "category_name": r.category_name,
                "asr": " ".join(r.asr.split()),
                "scale_type": r.scale_type,
                "duration_type": r.duration_type,
                "number_type": r.number_type,
            }
        )
    return out
