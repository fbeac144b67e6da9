"""A tiny LPR-format world of coloured shapes on disk: JPEG frames and shop images, download
manifests (files or webdataset tars) and a VIDEOINFO clip table with boxes in original pixels."""

from __future__ import annotations

import io
import random
import tarfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from lpr_core.formats.schema import FRAME_MANIFEST_SCHEMA, IMAGE_MANIFEST_SCHEMA, VIDEOINFO_SCHEMA

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 200, 30), (200, 40, 200), (30, 200, 210)]
SHAPES = ["ellipse", "rectangle", "triangle"]


def draw_product(draw: ImageDraw.ImageDraw, product: int, box: tuple[int, int, int, int]) -> None:
    colour, shape = COLOURS[product % len(COLOURS)], SHAPES[(product // len(COLOURS)) % len(SHAPES)]
    x1, y1, x2, y2 = box
    if shape == "ellipse":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x1 + x2) // 2, y1), (x2, y2), (x1, y2)], fill=colour)


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def make_world(
    root: Path,
    *,
    num_products: int = 4,
    clips_per_product: int = 3,
    frames_per_clip: int = 4,
    size: tuple[int, int] = (48, 40),
    scale: float = 1.5,
    webdataset: bool = False,
    box_every: int = 2,
    seed: int = 0,
) -> dict:
    """Write the world under ``root``; frames are stored at ``size``, their original size is
    ``size * scale`` (boxes in the clip table are in original pixels); every ``box_every``-th
    frame of a clip carries its product box."""
    rng = random.Random(seed)
    w, h = size
    ow, oh = int(w * scale), int(h * scale)
    image_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(num_products)]
    live_id = str(uuid.UUID(int=rng.getrandbits(128)))
    files: dict[str, bytes] = {}
    image_rows, frame_rows, clip_rows = [], [], []
    for p, image_id in enumerate(image_ids):
        shop = Image.new("RGB", (w, w), (255, 255, 255))
        draw_product(ImageDraw.Draw(shop), p, (w // 6, w // 6, w - w // 6, w - w // 6))
        files[f"images/{image_id}.jpg"] = jpeg(shop)
        image_rows.append((image_id, f"images/{image_id}.jpg", w, w, 2 * w, 2 * w))
    start = 0
    for p, image_id in enumerate(image_ids):
        for _ in range(clips_per_product):
            clip_id = f"{live_id}-{start}-{start + 1000}"
            start += 1000
            box_idx, boxes = [], []
            for f in range(frames_per_clip):
                frame = Image.new("RGB", (w, h), tuple(rng.randrange(60, 160) for _ in range(3)))
                bw, bh = rng.randrange(w // 3, w // 2), rng.randrange(h // 3, h // 2)
                x1, y1 = rng.randrange(0, w - bw), rng.randrange(0, h - bh)
                draw_product(ImageDraw.Draw(frame), p, (x1, y1, x1 + bw, y1 + bh))
                frame_id = f"{clip_id}-{f:04d}"
                files[f"frames/{frame_id}.jpg"] = jpeg(frame)
                frame_rows.append((frame_id, clip_id, f, f"frames/{frame_id}.jpg", w, h, ow, oh))
                if f % box_every == 0:  # frames carrying a box (in original pixels)
                    box_idx.append(f)
                    boxes.append([x1 * scale, y1 * scale, (x1 + bw) * scale, (y1 + bh) * scale])
            clip_rows.append(
                {
                    "clip_id": clip_id,
                    "live_id": live_id,
                    "start_ms": start - 1000,
                    "end_ms": start,
                    "frame_indices": list(range(frames_per_clip)),
                    "box_frame_indices": box_idx,
                    "boxes": boxes,
                    "image_id": image_id,
                    "image_title": f"product {p}",
                    "category_id": p,
                    "category_name": "toy",
                    "asr": "",
                    "scale_type": 1,
                    "duration_type": 1,
                    "number_type": 0,
                }
            )
    tar_of: dict[str, str] = {}
    if webdataset:
        (root / "shards").mkdir(parents=True, exist_ok=True)
        for kind in ("frames", "images"):
            with tarfile.open(root / "shards" / f"{kind}.tar", "w") as tar:
                for name, data in files.items():
                    if name.startswith(kind + "/"):
                        info = tarfile.TarInfo(name.split("/", 1)[1])
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                        tar_of[name] = f"shards/{kind}.tar"
    else:
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)

    def common(path: str, w_: int, h_: int, ow_: int, oh_: int) -> dict:
        return {
            "url": f"http://127.0.0.1/{path}",
            "path": tar_of.get(path, path),
            "tar_member": path.split("/", 1)[1] if path in tar_of else None,
            "width": w_,
            "height": h_,
            "original_width": ow_,
            "original_height": oh_,
            "status": "success",
            "error": None,
            "sha256": None,
        }

    frames = pa.Table.from_pylist(
        [{"frame_id": r[0], "clip_id": r[1], "frame_index": r[2], **common(*r[3:])} for r in frame_rows],
        schema=FRAME_MANIFEST_SCHEMA,
    )
    images = pa.Table.from_pylist([{"image_id": r[0], **common(*r[1:])} for r in image_rows], schema=IMAGE_MANIFEST_SCHEMA)
    (root / "manifests").mkdir(parents=True, exist_ok=True)
    pq.write_table(frames, root / "manifests" / "train_frames.parquet")
    pq.write_table(images, root / "manifests" / "train_images.parquet")
    clips = pa.Table.from_pylist(clip_rows, schema=VIDEOINFO_SCHEMA)
    return {"root": root, "clips": clips, "image_ids": image_ids, "scale": scale}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> dict:
    """4 products x 3 clips x 4 frames, as files."""
    return make_world(tmp_path_factory.mktemp("world"))


def tiny_encoder_params(**train):
    """The real ``train_encoder`` section shrunk: resnet10 of width 16 at 32 px, 2 frames, batch 4, CPU."""
    from lpr_core.training.tasks import TrainEncoderParams

    section = {
        "model": {
            "backbone": "resnet10",
            "backbone_width": 16,
            "image_size": 32,
            "num_frames": 2,
            "embed_dim": 32,
            "decoder_dim": 32,
            "dropout": 0.1,
            "aggregator": "transformer",
        },
        "data": {"crop_boxes": True, "box_jitter": 0.0},
        "train": {
            "max_steps": 6,
            "batch_size": 4,
            "lr": 1e-3,
            "warmup_steps": 2,
            "checkpoint_every": 3,
            "num_workers": 0,
            "device": "cpu",
            "progress": False,
            "log_every": 1,
            **train,
        },
    }
    return TrainEncoderParams.from_mapping(section)


@pytest.fixture
def encoder_params():
    """Factory of tiny ``train_encoder`` params (keyword overrides of ``train:``)."""
    return tiny_encoder_params


@pytest.fixture
def world_readers(tiny_world):
    """(clips, frames reader, images reader) of the tiny world."""
    from lpr_core.data.datasets import ManifestImages

    root = tiny_world["root"]
    return (
        tiny_world["clips"],
        ManifestImages.from_download(root, "train", "frames"),
        ManifestImages.from_download(root, "train", "images"),
    )


@pytest.fixture
def world_factory():
    """:func:`make_world` itself, for tests that need other worlds."""
    return make_world
