"""Datasets over download manifests (files and webdataset tars), with small worlds built here."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from lpr_core.data.datasets import (
    ClipPairDataset,
    DetectionDataset,
    GalleryImageDataset,
    ManifestImages,
    QueryClipDataset,
    build_dataloader,
    sample_frame_positions,
    videoinfo_frame_boxes,
)
from lpr_core.data.samplers import ResumableSampler
from lpr_core.data.transforms import build_detection_transform, build_eval_transform, build_train_transform
from lpr_core.formats.schema import FRAME_MANIFEST_SCHEMA, IMAGE_MANIFEST_SCHEMA, VIDEOINFO_SCHEMA

LIVE = "0b1e7c52-6a42-4d7e-9d3a-0f9b2a6c1d11"
IMG = ["1a2b3c4d-0000-4000-8000-000000000001", "1a2b3c4d-0000-4000-8000-000000000002", "1a2b3c4d-0000-4000-8000-000000000003"]
BLUE, RED = (0, 0, 255), (255, 0, 0)
W, H, SCALE = 40, 30, 2  # downloaded size; the original is SCALE times larger


def _jpeg(colour, box=None) -> bytes:
    """A blue frame, with a red rectangle at ``box`` (downloaded pixels)."""
    img = Image.new("RGB", (W, H), colour)
    if box:
        img.paste(RED, box)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _row(path, member=None, status="success", w=W, h=H):
    return {
        "url": "http://127.0.0.1/x.jpg",
        "path": path,
        "tar_member": member,
        "width": w,
        "height": h,
        "original_width": w * SCALE,
        "original_height": h * SCALE,
        "status": status,
        "error": None if status == "success" else "HTTP 404",
        "sha256": None,
    }


@pytest.fixture(params=["files", "webdataset"])
def world(request, tmp_path):
    """Clips: c0 (5 frames, product IMG0), c1 (2 frames, IMG1), c2 (IMG0 again, 3 frames),
    c3 (its image failed), c4 (every frame failed). Every frame shows a red product at
    (10, 8)-(30, 22) in downloaded pixels; the clip table holds that box in original pixels."""
    tar_mode = request.param == "webdataset"
    red_box = (10, 8, 30, 22)
    files: dict[str, bytes] = {}
    frames, clips = [], []
    layout = {0: (5, IMG[0]), 1: (2, IMG[1]), 2: (3, IMG[0]), 3: (2, IMG[2]), 4: (2, IMG[1])}
    for c, (n, image_id) in layout.items():
        clip_id = f"{LIVE}-{c * 1000}-{c * 1000 + 999}"
        for f in range(n):
            frame_id = f"{clip_id}-{f:04d}"
            files[f"frames/{frame_id}.jpg"] = _jpeg(BLUE, red_box)
            status = "failed" if c == 4 else "success"
            frames.append({"frame_id": frame_id, "clip_id": clip_id, "frame_index": f, **_row(f"frames/{frame_id}.jpg", status=status)})
        clips.append(
            {
                "clip_id": clip_id, "live_id": LIVE, "start_ms": c * 1000, "end_ms": c * 1000 + 999,
                "frame_indices": list(range(n)), "box_frame_indices": [0],
                "boxes": [[v * SCALE for v in red_box]],
                "image_id": image_id, "image_title": "", "category_id": 0, "category_name": "", "asr": "",
                "scale_type": 0, "duration_type": 0, "number_type": 0,
            }
        )
    images = []
    for k, image_id in enumerate(IMG):
        files[f"images/{image_id}.jpg"] = _jpeg((0, 255 - 60 * k, 0))
        images.append({"image_id": image_id, **_row(f"images/{image_id}.jpg", status="failed" if k == 2 else "success")})
    if tar_mode:
        with tarfile.open(tmp_path / "shard.tar", "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for r in frames + images:
            r["tar_member"], r["path"] = r["path"], "shard.tar"
    else:
        for name, data in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(data)
    (tmp_path / "manifests").mkdir()
    pq.write_table(pa.Table.from_pylist(frames, schema=FRAME_MANIFEST_SCHEMA), tmp_path / "manifests" / "train_frames.parquet")
    pq.write_table(pa.Table.from_pylist(images, schema=IMAGE_MANIFEST_SCHEMA), tmp_path / "manifests" / "train_images.parquet")
    return {
        "root": tmp_path,
        "clips": pa.Table.from_pylist(clips, schema=VIDEOINFO_SCHEMA),
        "frames": ManifestImages.from_download(tmp_path, "train", "frames"),
        "images": ManifestImages.from_download(tmp_path, "train", "images"),
        "red_box": red_box,
        "clip_ids": [c["clip_id"] for c in clips],
    }


def test_manifest_reads_files_and_tars(world):
    frames, images = world["frames"], world["images"]
    assert len(frames) == 12 and frames.num_failed == 2
    assert IMG[2] not in images and IMG[0] in images and images.num_failed == 1
    img = frames.open(f"{world['clip_ids'][0]}-0000")
    assert img.size == (W, H) and img.mode == "RGB"
    assert frames.clip_frames(world["clip_ids"][0]) == [0, 1, 2, 3, 4]
    assert frames.clip_frames(world["clip_ids"][4]) == []
    assert frames.to_downloaded(f"{world['clip_ids'][0]}-0000", [[20, 16, 60, 44]]) == [(10.0, 8.0, 30.0, 22.0)]
    with pytest.raises(KeyError, match="train_frames.parquet"):
        frames.open(f"{world['clip_ids'][4]}-0000")
    with pytest.raises(TypeError, match="not a frame manifest"):
        images.clip_frames("x")


def test_manifest_errors_name_the_culprit(tmp_path, world):
    with pytest.raises(FileNotFoundError, match="download manifest not found"):
        ManifestImages.from_download(tmp_path / "nowhere", "train", "frames")
    table = pa.Table.from_pylist([{"image_id": IMG[0], **_row("images/absent.jpg")}], schema=IMAGE_MANIFEST_SCHEMA)
    reader = ManifestImages(tmp_path, table, id_column="image_id", source="m.parquet")
    with pytest.raises(FileNotFoundError, match=rf"m.parquet: .*{IMG[0]}"):
        reader.open(IMG[0])
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "bad.jpg").write_bytes(b"not a jpeg")
    table = pa.Table.from_pylist([{"image_id": IMG[1], **_row("images/bad.jpg")}], schema=IMAGE_MANIFEST_SCHEMA)
    with pytest.raises(ValueError, match=f"cannot decode the image of {IMG[1]}"):
        ManifestImages(tmp_path, table, id_column="image_id").open(IMG[1])
    broken = pa.Table.from_pylist([{"image_id": IMG[0], **_row(None)}], schema=IMAGE_MANIFEST_SCHEMA)
    with pytest.raises(ValueError, match="row 0 .* no path"):
        ManifestImages(tmp_path, broken, id_column="image_id")
    with pytest.raises(ValueError, match="missing columns"):
        ManifestImages(tmp_path, pa.table({"image_id": [IMG[0]]}), id_column="image_id")


def test_frame_positions():
    assert sample_frame_positions(3, 5, "uniform") == [0, 1, 2]
    assert sample_frame_positions(10, 5, "uniform") == [1, 3, 5, 7, 9]
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos = sample_frame_positions(10, 4, "random_segment", rng)
        edges = np.linspace(0, 10, 5)
        assert all(int(edges[i]) <= p < max(int(edges[i + 1]), int(edges[i]) + 1) for i, p in enumerate(pos))
    with pytest.raises(ValueError, match="unknown frame sampling"):
        sample_frame_positions(10, 4, "dense")
    with pytest.raises(ValueError, match="at least one frame"):
        sample_frame_positions(0, 4, "uniform")


def _pairs(world, crop=True, size=16):
    tf = build_eval_transform(size, mean=(0, 0, 0), std=(1, 1, 1))
    return ClipPairDataset(
        world["clips"], world["frames"], world["images"], num_frames=4,
        frame_transform=tf, image_transform=tf, crop_boxes=crop, box_padding=0.0,
    )


def test_clip_pairs_drop_unusable_clips_and_share_labels(world):
    ds = _pairs(world)
    assert ds.dropped == {"image_missing": 1, "no_frames": 1}
    assert ds.clip_ids == world["clip_ids"][:3]
    assert ds.image_ids == sorted([IMG[0], IMG[1]])
    labels = [int(ds[i]["label"]) for i in range(3)]
    assert labels[0] == labels[2] != labels[1]
    short = ds[1]  # 2 downloaded frames for T = 4
    assert short["frames"].shape == (4, 3, 16, 16)
    assert short["frame_mask"].tolist() == [True, True, False, False]
    assert short["frames"][2:].abs().sum() == 0
    assert ds[0]["frame_mask"].all()


def test_box_crops_use_downloaded_coordinates(world):
    # frame 0 of each clip carries the box: its crop is the red product only
    cropped = _pairs(world, crop=True)[0]["frames"][0]
    full = _pairs(world, crop=False)[0]["frames"][0]
    red, blue = cropped[0].mean(), cropped[2].mean()
    assert red > 0.8 and blue < 0.2
    assert full[2].mean() > 0.2  # the full frame still shows the blue background


def test_box_jitter_moves_training_crops_only(world):
    tf = build_eval_transform(16, mean=(0, 0, 0), std=(1, 1, 1))

    def pairs(jitter):
        return ClipPairDataset(world["clips"], world["frames"], world["images"], num_frames=4, frame_transform=tf,
                               image_transform=tf, box_padding=0.0, box_jitter=jitter)

    exact, loose = pairs(0.0), pairs(0.4)
    # seeded (training) samples: the boxed frame's crop moves with the seed, reproducibly
    assert not torch.equal(exact[(0, 11)]["frames"][0], loose[(0, 11)]["frames"][0])
    assert torch.equal(loose[(0, 11)]["frames"], loose[(0, 11)]["frames"])
    assert not torch.equal(loose[(0, 11)]["frames"][0], loose[(0, 12)]["frames"][0])
    # unseeded (evaluation) samples keep the exact box
    assert torch.equal(exact[0]["frames"], loose[0]["frames"])


def test_training_samples_follow_their_seed(world):
    tf = build_train_transform(16)
    ds = ClipPairDataset(world["clips"], world["frames"], world["images"], num_frames=2, frame_transform=tf, image_transform=tf)
    a, b, c = ds[(0, 11)], ds[(0, 11)], ds[(0, 12)]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["image"], b["image"])
    assert not torch.equal(a["frames"], c["frames"])


def test_loader_batches_do_not_depend_on_workers(world):
    tf = build_train_transform(16)
    ds = ClipPairDataset(world["clips"], world["frames"], world["images"], num_frames=2, frame_transform=tf, image_transform=tf)

    def batches(workers):
        sampler = ResumableSampler(len(ds), seed=3, with_seeds=True)
        loader = build_dataloader(ds, batch_size=2, sampler=sampler, num_workers=workers, persistent_workers=False)
        return [b["frames"] for b in loader]

    for x, y in zip(batches(0), batches(1)):
        assert torch.equal(x, y)
    loader = build_dataloader(ds, batch_size=2, num_workers=1, device="cuda")
    assert loader.pin_memory and loader.persistent_workers and loader.prefetch_factor == 4
    assert not build_dataloader(ds, batch_size=2).pin_memory


def test_query_and_gallery_datasets_list_what_is_missing(world):
    tf = build_eval_transform(16)
    queries = QueryClipDataset(world["clip_ids"], world["frames"], num_frames=3, transform=tf)
    assert queries.missing == [world["clip_ids"][4]] and len(queries) == 4
    sample = queries[0]
    assert sample["frames"].shape == (3, 3, 16, 16) and sample["frame_mask"].all()
    gallery = GalleryImageDataset(IMG, world["images"], transform=tf)
    assert gallery.missing == [IMG[2]] and len(gallery) == 2
    assert gallery[1]["image"].shape == (3, 16, 16) and int(gallery[1]["index"]) == 1


def test_detection_dataset_boxes_in_downloaded_pixels(world):
    boxes = videoinfo_frame_boxes(world["clips"])
    assert boxes.num_rows == 5  # frame 0 of each clip
    ds = DetectionDataset(boxes, world["frames"], transform=build_detection_transform(train=False))
    assert ds.dropped == 1 and len(ds) == 4  # the clip whose frames failed
    image, target = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert target["boxes"].tolist() == [list(map(float, world["red_box"]))]
    assert target["labels"].tolist() == [1]
