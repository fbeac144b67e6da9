"""Benchmark: the validate stage on annotations and manifests the size of the LPR4M test set.

    python benchmarks/validate_scale.py [--out benchmarks/out/validate_scale] [--keep]

Writes LPR4M-format test files (20,079 query clips in 110 livestreams, 501,656 frame URLs, 66,358
gallery images, 426,751 boxed frames, plus a small training part) and their download manifests
(no image files: decoding is excluded, ``decode_sample: 0``), then times, in this process, what
the stage does after parsing its arguments: reading every file (in 2 worker processes, while
great-expectations is imported), building the check tables, running the checkpoint and writing
Data Docs. Target: <= 30 s on 2 cores. Prints the wall time of each step and the CPU time of
the process and its workers (on a machine shared with other work, the CPU time is the better
figure); the last line is ``RESULT seconds=<wall> cpu_seconds=<cpu> ...``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_LIVES, N_QUERIES, N_FRAMES, N_GALLERY, N_BOXED, N_TITLES = 110, 20_079, 501_656, 66_358, 426_751, 6_076
N_TRAIN_CLIPS, TRAIN_FRAMES_PER_CLIP = 500, 20
PREFIX = "http://127.0.0.1:8000/lpr/"


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.array([str(uuid.UUID(bytes=b.tobytes(), version=4)) for b in rng.integers(0, 256, (n, 16), dtype=np.uint8)])


def _split_counts(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    cuts = np.sort(rng.choice(np.arange(1, total), parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def _keep_ratio(ow: np.ndarray, oh: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = np.minimum(ow, oh)
    scale = np.where(s <= size, 1.0, size / s)
    return np.round(ow * scale).astype(np.int32), np.round(oh * scale).astype(np.int32)


def _manifest(ids, urls, ow, oh, size, rng, frames=None) -> pa.Table:
    from lpr_core.formats.schema import FRAME_MANIFEST_SCHEMA, IMAGE_MANIFEST_SCHEMA

    n = len(ids)
    ok = rng.random(n) > (0.005 if frames is not None else 0.0)  # 0.5% of the frames failed
    w, h = _keep_ratio(ow, oh, size)
    cols = {
        "url": urls,
        "path": [f"00000/{i}.jpg" for i in range(n)],
        "tar_member": pa.nulls(n, pa.string()),
        "width": np.where(ok, w, 0).astype(np.int32),
        "height": np.where(ok, h, 0).astype(np.int32),
        "original_width": ow.astype(np.int32),
        "original_height": oh.astype(np.int32),
        "status": np.where(ok, "success", "failed"),
        "error": np.where(ok, None, "HTTP 404"),
        "sha256": [f"{v:064x}" for v in rng.integers(0, 2**62, n)],
    }
    if frames is None:
        return pa.table({"image_id": ids, **cols}, schema=IMAGE_MANIFEST_SCHEMA)
    clip_ids, frame_index = frames
    return pa.table(
        {"frame_id": ids, "clip_id": clip_ids, "frame_index": frame_index.astype(np.uint16), **cols},
        schema=FRAME_MANIFEST_SCHEMA,
    )


def make_data(root: Path, image_size: int, seed: int = 0) -> dict[str, int]:
    """LPR4M-format test files (+ a small training part) and their four manifests under ``root``."""
    from lpr_core.formats import writers
    from lpr_core.formats.records import VideoInfoRow

    rng = np.random.default_rng(seed)
    ann, dl = root / "annotations", root / "download"
    (dl / "manifests").mkdir(parents=True, exist_ok=True)
    ann.mkdir(parents=True, exist_ok=True)

    lives = _uuids(rng, N_LIVES)
    gallery_live = np.repeat(lives, _split_counts(N_GALLERY, N_LIVES, rng))
    images = _uuids(rng, N_GALLERY)
    query_live = np.repeat(lives, _split_counts(N_QUERIES, N_LIVES, rng))
    starts = rng.integers(1_600_000_000_000, 1_700_000_000_000, N_QUERIES)
    clips = np.array([f"{lv}-{s}-{s + 30_000}" for lv, s in zip(query_live, starts)])
    frames_per_clip = np.full(N_QUERIES, N_FRAMES // N_QUERIES)
    frames_per_clip[: N_FRAMES % N_QUERIES] += 1
    frame_clip = np.repeat(clips, frames_per_clip)
    frame_index = np.concatenate([np.arange(k) for k in frames_per_clip])
    frame_ids = np.char.add(np.char.add(frame_clip.astype(str), "-"), np.char.zfill(frame_index.astype(str), 4))

    by_live: dict[str, list[str]] = {}
    for lv, im in zip(gallery_live, images):
        by_live.setdefault(lv, []).append(im)
    gt = {c: [by_live[c[:36]][int(rng.integers(len(by_live[c[:36]])))]] for c in clips}
    ow = rng.choice([720, 1080], N_FRAMES)
    oh = np.where(ow == 720, 1280, 1920)
    boxed = np.sort(rng.choice(N_FRAMES, N_BOXED, replace=False))
    boxes = {}
    for i in boxed:
        x1, y1 = float(rng.integers(0, ow[i] // 2)), float(rng.integers(0, oh[i] // 2))
        boxes[frame_ids[i]] = [[x1, y1, x1 + ow[i] / 4, y1 + oh[i] / 4]]

    writers.write_gt_images(ann / f"test_videoid_to_gtimage_{N_QUERIES}.json", gt)
    writers.write_live_gallery(ann / f"test_liveid_to_gallery_{N_LIVES}.json", by_live)
    writers.write_frame_boxes(ann / f"test_frameid2gtbox_{N_QUERIES}_{N_BOXED}.json", boxes)
    writers.write_test_asr(ann / f"test_videoid_asr_{N_QUERIES}.txt", {c: "this one is lovely" for c in clips})
    writers.write_image_titles(ann / f"test_image_title_{N_TITLES}.txt", {i: "a product" for i in images[:N_TITLES]})
    frame_urls = np.char.add(np.char.add(PREFIX, frame_ids), ".jpg")
    image_urls = np.char.add(np.char.add(PREFIX, images), ".jpg")
    writers.write_url_list(ann / f"test_frame_url_{N_FRAMES}.txt", frame_urls.tolist())
    writers.write_url_list(ann / f"test_image_url_{N_GALLERY}.txt", image_urls.tolist())
    pq.write_table(
        _manifest(frame_ids, frame_urls, ow, oh, image_size, rng, (frame_clip, frame_index)),
        dl / "manifests" / "test_frames.parquet",
    )
    side = rng.integers(300, 1000, N_GALLERY)
    pq.write_table(_manifest(images, image_urls, side, side, image_size, rng), dl / "manifests" / "test_images.parquet")

    # a small training part, so that every suite has rows
    train_lives = _uuids(rng, 10)
    train_images = _uuids(rng, N_TRAIN_CLIPS)
    rows, tframes = [], []
    for k in range(N_TRAIN_CLIPS):
        clip = f"{train_lives[k % 10]}-{1000 * k}-{1000 * k + 999}"
        fids = [f"{clip}-{j:04d}" for j in range(TRAIN_FRAMES_PER_CLIP)]
        per_frame = [[(10.0, 10.0, 100.0, 100.0)] if j % 2 else [] for j in range(TRAIN_FRAMES_PER_CLIP)]
        rows.append(VideoInfoRow(clip, fids, per_frame, train_images[k], "title", k % 20, f"category {k % 20}",
                                 "asr", k % 3, k % 3, k % 2))
        tframes += fids
    writers.write_videoinfo(ann / f"training_videoinfo_{N_TRAIN_CLIPS}.txt", rows)
    tframes = np.array(tframes)
    tf_urls = np.char.add(np.char.add(PREFIX, tframes), ".jpg")
    ti_urls = np.char.add(np.char.add(PREFIX, train_images), ".jpg")
    writers.write_url_list(ann / f"training_frame_url_{len(tframes)}.txt", tf_urls.tolist())
    writers.write_url_list(ann / f"training_image_url_{N_TRAIN_CLIPS}.txt", ti_urls.tolist())
    n = len(tframes)
    tclip = np.array([f[:-5] for f in tframes])
    tidx = np.array([int(f[-4:]) for f in tframes])
    pq.write_table(
        _manifest(tframes, tf_urls, np.full(n, 640), np.full(n, 480), image_size, rng, (tclip, tidx)),
        dl / "manifests" / "train_frames.parquet",
    )
    side = np.full(N_TRAIN_CLIPS, 500)
    pq.write_table(_manifest(train_images, ti_urls, side, side, image_size, rng), dl / "manifests" / "train_images.parquet")
    return {"test_frames": N_FRAMES, "test_images": N_GALLERY, "queries": N_QUERIES, "boxed_frames": N_BOXED}


def main(argv: list[str] | None = None) -> int:
    """Generate the data, validate it, print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "validate_scale")
    parser.add_argument("--keep", action="store_true", help="reuse data generated by an earlier run")
    args = parser.parse_args(argv)

    from lpr_core.validation.params import load_validate_params

    params = replace(load_validate_params(REPO / "params.yaml"), decode_sample=0, min_download_success_rate=0.99)
    root = args.out
    t = time.perf_counter()
    if not (args.keep and (root / "download" / "manifests" / "test_frames.parquet").is_file()):
        shutil.rmtree(root, ignore_errors=True)
        counts = make_data(root, params.image_size)
        print(f"generated {counts} in {time.perf_counter() - t:.1f}s")
    gx_dir = root / "gx"
    shutil.rmtree(gx_dir, ignore_errors=True)
    shutil.copytree(REPO / "gx", gx_dir, ignore=shutil.ignore_patterns("uncommitted"))

    import os
    import resource

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # great_expectations is imported inside validate(), while worker processes read the files
    assert "great_expectations" not in sys.modules
    from lpr_core.validation.runner import format_summary, validate

    c0, t0 = cpu(), time.perf_counter()
    outcome = validate(root / "annotations", root / "download", gx_dir, params)
    total, cpu_s = time.perf_counter() - t0, cpu() - c0
    print(format_summary(outcome))
    print("steps (wall): " + ", ".join(f"{k} {v:.1f}s" for k, v in outcome.seconds.items()))
    print("steps (CPU):  " + ", ".join(f"{k} {v:.1f}s" for k, v in outcome.cpu_seconds.items()))
    rows = {k: v["rows"] for k, v in outcome.summary["suites"].items()}
    print(f"rows per check table: {json.dumps(rows)}")
    load = os.getloadavg()[0]
    print(f"wall {total:.1f}s, CPU {cpu_s:.1f}s (this process and its workers), load average {load:.1f} on {os.cpu_count()} CPUs")
    print(
        f"RESULT seconds={total:.1f} cpu_seconds={cpu_s:.1f} success={outcome.success} target_seconds=30 "
        f"load_avg={load:.1f} " + " ".join(f"{k}_s={v:.1f}" for k, v in outcome.seconds.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
