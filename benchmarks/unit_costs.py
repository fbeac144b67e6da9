"""Unit costs of every stage's work, measured on this machine with the project's own code, and the
projection of full LPR4M on N nodes that ``docs/scaling.md`` holds.

Each figure is a rate per CPU-second (the rate of one fully used core) or a count of CPU-seconds,
measured from the CPU time of the processes doing the work, so a machine shared with other work
still gives usable figures (the wall times are printed too). The parts:

- download: the download stage's code (``lpr_core.data.download.download_all``: img2dataset with
  one process and 16 threads, the stored-JPEG checks, the manifest) in a fresh process, against
  :class:`lpr_core.synth.ImageServer` on loopback serving photo-like 720x1280 JPEGs (a livestream
  frame), resized to 224 px. Run on two list sizes; the difference of their CPU times divided by
  the difference of their sizes is the cost of one image (start-up costs cancel).
- parse: the project's videoinfo parser on rows at the release's density
  (``benchmarks/parse_videoinfo.py``: its input generator and ``project_reader_sample``).
- validate: ``benchmarks/validate_scale.py`` at LPR4M test scale (a tenth of it with ``--quick``),
  its check-table rows over its CPU time; the peak memory of its process tree per row.
- prepare: ``lpr_core.data.prepare.prepare`` (and the table writes) on the parse benchmark's
  videoinfo rows with their frame and image manifests; training clips over CPU time.
- decode: 224 px frames as the download stored them, decoded with PIL and put through the paper's
  training transform (the data loader's work per frame, ``benchmarks/gpu_check.py``'s dataset).
- embedding: the encoder's ``embed_images`` at the demo setting (``params.yaml``) and at the
  paper's (``presets/rice_paper.yaml``: open_clip ViT-B/32, 224 px, randomly initialised); the
  FLOPs per image of its forward and of a training step (counted, ``torch.utils.flop_counter``).
- index: one flat faiss index per livestream at LPR4M test scale (``benchmarks/rank_k.py``'s world:
  110 livestreams, 66,358 gallery vectors, 20,079 queries, d = 512): build, then search, k = 10.
- DVC: ``dvc add`` and ``dvc push`` (local remote) of a directory of stored JPEGs at two sizes: the
  cost per file; the size of the ``.dir`` manifest and of DVC's objects for it per file.

Usage::

    python benchmarks/unit_costs.py --quick      # small sizes: about 100 CPU-seconds (~2 min on 2 idle cores)
    python benchmarks/unit_costs.py              # more precise: about 230 CPU-seconds (13 min on a shared machine)
    python benchmarks/unit_costs.py --table benchmarks/out/unit_costs.json [--gpu-json gpu_check.json]

Writes every figure (value, unit, cores used, command) and the machine's load to ``--json``
(default ``benchmarks/out/unit_costs.json``), prints the projection table of
:mod:`benchmarks.projection`, and ends with ``RESULT <key>=<value> ...``, one key per unit cost.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import projection  # noqa: E402

DEFAULT_JSON = REPO / "benchmarks" / "out" / "unit_costs.json"
PARTS = ("download", "parse", "validate", "prepare", "decode", "embed", "index", "dvc")
#: Sizes per mode: download URLs, parse rows, validate's share of LPR4M test scale, prepare rows (two
#: runs each where start-up costs must cancel), decode seconds, embedding batches, DVC files, and
#: whether a training step's FLOPs are counted.
SIZES = {
    "quick": {"download": (40, 240), "parse_rows": 1500, "validate": (0.02, 0.1), "prepare": (200, 1500),
              "decode_s": 3.0, "embed_batches": 2, "dvc": (50, 400), "count_train_flops": False},
    "default": {"download": (100, 2000), "parse_rows": 20_000, "validate": (0.1, 1.0), "prepare": (1000, 8000),
                "decode_s": 15.0, "embed_batches": 6, "dvc": (200, 4000), "count_train_flops": True},
}
SOURCE_SIZE = (720, 1280)  # a livestream frame (portrait), before the 224 px resize
IMAGE_SIZE = 224  # the paper's model size, download.image_size for real data


# ------------------------------------------------------------------------------------- helpers


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + path if path else ""),
            "NO_ALBUMENTATIONS_UPDATE": "1", "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "false"}


def run_child(cmd: list[str], cwd: Path | None = None) -> dict:
    """Run ``cmd`` to the end; its wall time, CPU time (its whole process tree) and peak RSS (sampled).

    Raises:
        RuntimeError: on a non-zero exit status (with the end of its output).
    """
    import psutil

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = kids.ru_utime + kids.ru_stime
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.wait(0.05):
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        total += p.memory_info().rss
            except psutil.NoSuchProcess:
                return
            peak[0] = max(peak[0], total)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited with {proc.returncode}:\n{out[-3000:]}")
    return {"wall_s": wall, "cpu_s": kids.ru_utime + kids.ru_stime - cpu0, "peak_rss_bytes": peak[0], "stdout": out}


@contextlib.contextmanager
def one_thread():
    """torch (and faiss, when importable) on one thread: the rate of one core, and no idle threads
    spinning on a shared machine."""
    import torch

    try:
        import faiss
    except ImportError:
        faiss = None
    before = torch.get_num_threads(), faiss.omp_get_max_threads() if faiss else None
    torch.set_num_threads(1)
    if faiss:
        faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        if faiss:
            faiss.omp_set_num_threads(before[1])


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def _marginal(n: tuple[int, int], cpu: tuple[float, float]) -> tuple[float, bool]:
    """Items per CPU-second from two runs of different sizes (start-up cancels); falls back to the
    larger run alone (start-up included: a lower bound) when the difference is not positive."""
    if cpu[1] > cpu[0] and n[1] > n[0]:
        return (n[1] - n[0]) / (cpu[1] - cpu[0]), True
    return n[1] / cpu[1], False


class Figures:
    """The unit costs and their provenance: value, unit, cores used, command."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.meta: dict[str, dict] = {}

    def add(self, key: str, value: float, unit: str, cores: int | str, command: str, **extra) -> None:
        self.values[key] = float(value)
        self.meta[key] = {"value": float(value), "unit": unit, "cores": cores, "command": command, **extra}
        print(f"  {key} = {value:,.4g}  [{unit}; cores: {cores}]", flush=True)


# ------------------------------------------------------------------------------------ download


def make_source(world: Path, n: int, size: tuple[int, int], pool: int = 24, seed: int = 0) -> list[str]:
    """A directory the image server serves: ``n`` frame ids of one livestream (clips of 20 frames),
    each a hard link to one of ``pool`` photo-like JPEGs of ``size`` (benchmarks/gpu_check.py's)."""
    import random

    from benchmarks.gpu_check import synthetic_jpegs
    from lpr_core.synth.layout import SOURCE_DIR, source_path

    rnd = random.Random(seed)
    live = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    blobs = synthetic_jpegs(pool, size, seed)
    pool_dir = world / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    (world / SOURCE_DIR).mkdir(exist_ok=True)
    files = []
    for k, blob in enumerate(blobs):
        files.append(pool_dir / f"{k}.jpg")
        files[-1].write_bytes(blob)
    ids = []
    for i in range(n):
        start = 1_660_000_000_000 + 60_000 * (i // 20)
        frame_id = f"{live}-{start}-{start + 20_999}-{i % 20:04d}"
        path = source_path(world, frame_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(files[i % pool], path)
        except OSError:
            shutil.copyfile(files[i % pool], path)
        ids.append(frame_id)
    return ids


def download_params():
    """``params.yaml``'s download section at the paper's 224 px, one img2dataset process of 16 threads."""
    from lpr_core.config import load_section
    from lpr_core.data.download import DownloadParams

    params = load_section(DownloadParams, "download", REPO / "params.yaml")
    return replace(params, image_size=IMAGE_SIZE, processes=1, thread_count=16, output_format="files")


def _child_download(urls: str, out: str) -> int:
    from lpr_core.data.download import download_all

    summary = download_all(urls, out, download_params(), progress=False, log=lambda _msg: None)
    print(json.dumps(summary["lists"]["train_frame_urls"]))
    return 0


def measure_download(work: Path, sizes: tuple[int, int], figures: Figures) -> list[Path]:
    """Two download runs against the loopback server; returns the stored JPEGs of the larger one."""
    from lpr_core.formats.writers import write_url_list
    from lpr_core.synth import ImageServer

    world = work / "world"
    ids = make_source(world, max(sizes), SOURCE_SIZE)
    pool = list((world / "pool").iterdir())
    source_kb = sum(p.stat().st_size for p in pool) / len(pool) / 1e3
    runs = []
    with ImageServer(world, fault_rate=0.0) as server:
        for n in sizes:
            urls = work / f"urls-{n}"
            write_url_list(urls / f"training_frame_url_{n}.txt", [f"{server.url_prefix}{i}.jpg" for i in ids[:n]])
            out = work / f"download-{n}"
            r = run_child([sys.executable, __file__, "--child", "download", str(urls), str(out)])
            summary = _last_json(r["stdout"])
            if summary["success"] != n:
                raise RuntimeError(f"download of {n} URLs stored {summary['success']}: {summary}")
            runs.append({**r, "out": out, "img2dataset_s": summary["img2dataset_seconds"]})
            print(f"  download of {n} URLs: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} CPU-s "
                  f"(img2dataset {summary['img2dataset_seconds']:.1f} s)", flush=True)
    rate, marginal = _marginal(sizes, (runs[0]["cpu_s"], runs[1]["cpu_s"]))
    stored = sorted(runs[1]["out"].rglob("*.jpg"))
    stored_kb = sum(p.stat().st_size for p in stored) / len(stored) / 1e3
    figures.add("download_img_per_s_core", rate, "images per CPU-second (one core)", 1,
                f"python benchmarks/unit_costs.py --only download: download_all on {sizes[0]} and {sizes[1]} URLs, "
                "processes 1, threads 16, image_size 224, ImageServer on loopback",
                marginal=marginal, source=f"{SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} JPEG, {source_kb:.0f} KB",
                wall_img_per_s=sizes[1] / runs[1]["wall_s"])
    figures.add("download_source_kb", source_kb, "KB per fetched JPEG (synthetic 720x1280)", "-",
                "mean size of the JPEGs the server sent")
    figures.add("download_stored_kb", stored_kb, "KB per stored JPEG at 224 px (synthetic content)", "-",
                f"mean size of the JPEGs the {sizes[1]}-URL run stored")
    return stored


# --------------------------------------------------------------------------------- parse, prepare


def videoinfo_input(work: Path, rows: int) -> Path:
    """``rows`` training_videoinfo rows at the release's density (benchmarks/parse_videoinfo.py's
    generator), written once per size."""
    from benchmarks import parse_videoinfo

    path = work / "videoinfo" / f"training_videoinfo_{rows}.txt"
    if not path.exists():
        with contextlib.redirect_stderr(io.StringIO()):  # the writer's progress bar
            parse_videoinfo.write_input(path, rows, seed=0)
    return path


def measure_parse(path: Path, figures: Figures) -> None:
    """The project's parser, in this process, on every row of ``path``."""
    from benchmarks import parse_videoinfo

    rows = sum(1 for _ in open(path, "rb"))
    wall, cpu, n = parse_videoinfo.project_reader_sample(path, rows)
    figures.add("parse_rows_per_s", n / cpu, "training_videoinfo rows per CPU-second (one core)", 1,
                f"benchmarks/parse_videoinfo.py project_reader_sample on {rows} rows (release density)",
                wall_rows_per_s=n / wall, mb_per_row=path.stat().st_size / n / 1e6)


def _prepare_inputs(videoinfo: Path, root: Path) -> tuple[Path, Path, int]:
    """Annotations (the videoinfo file and a tiny test part) and the train manifests of its rows."""
    import numpy as np
    import pyarrow.parquet as pq

    from benchmarks.validate_scale import PREFIX, _manifest
    from lpr_core.formats import writers

    ann, dl = root / "annotations", root / "download" / "manifests"
    ann.mkdir(parents=True, exist_ok=True)
    dl.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(videoinfo, ann / videoinfo.name)
    clips, frame_ids, frame_index, images = [], [], [], {}
    with open(videoinfo, encoding="utf-8") as fh:
        for line in fh:
            clip, frames, _boxes, image = line.split("\t", 4)[:4]
            n = frames.count(",") + 1
            clips += [clip] * n
            frame_ids += [f"{clip}-{k:04d}" for k in range(n)]
            frame_index += range(n)
            images[image] = None
    rng = np.random.default_rng(0)
    nf = len(frame_ids)
    frame_ids = np.array(frame_ids)
    urls = np.char.add(np.char.add(PREFIX, frame_ids), ".jpg")
    pq.write_table(_manifest(frame_ids, urls, np.full(nf, 720), np.full(nf, 1280), IMAGE_SIZE, rng,
                             (np.array(clips), np.array(frame_index))), dl / "train_frames.parquet")
    ids = np.array(list(images))
    pq.write_table(_manifest(ids, np.char.add(np.char.add(PREFIX, ids), ".jpg"), np.full(len(ids), 800),
                             np.full(len(ids), 800), IMAGE_SIZE, rng), dl / "train_images.parquet")
    live = str(uuid.UUID(int=1, version=4))
    gallery = [str(uuid.UUID(int=100 + k, version=4)) for k in range(5)]
    queries = {f"{live}-{1000 * k}-{1000 * k + 999}": [gallery[k]] for k in range(5)}
    writers.write_gt_images(ann / "test_videoid_to_gtimage_5.json", queries)
    writers.write_live_gallery(ann / "test_liveid_to_gallery_1.json", {live: gallery})
    writers.write_test_asr(ann / "test_videoid_asr_5.txt", {q: "asr" for q in queries})
    writers.write_image_titles(ann / "test_image_title_5.txt", {g: "a product" for g in gallery})
    writers.write_frame_boxes(ann / "test_frameid2gtbox_5_0.json", {})
    return ann, root / "download", nf


def _child_prepare(annotations: str, download: str, out: str) -> int:
    from lpr_core.data.prepare import PrepareParams, prepare
    from lpr_core.formats.parquet import write_table

    c0, t0 = _cpu_seconds(), time.perf_counter()
    result = prepare(annotations, download, replace(PrepareParams(), query_attributes=None))
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, table in result.tables.items():  # what the stage writes
        write_table(table, Path(out) / f"{name}.parquet")
    print(json.dumps({"cpu_s": _cpu_seconds() - c0, "wall_s": time.perf_counter() - t0, "counts": result.counts}))
    return 0


def _prepare_run(work: Path, rows: int) -> dict:
    ann, dl, frames = _prepare_inputs(videoinfo_input(work, rows), work / f"prepare-{rows}")
    r = run_child([sys.executable, __file__, "--child", "prepare", str(ann), str(dl), str(work / f"prepare-{rows}" / "out")])
    got = _last_json(r["stdout"])
    clips = got["counts"]["train_clips"] + got["counts"]["val_clips"]
    print(f"  prepare of {clips} clips ({frames} frames): {got['wall_s']:.1f} s wall, {got['cpu_s']:.1f} CPU-s, "
          f"peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    return {**got, "clips": clips, "frames": frames, "peak": r["peak_rss_bytes"]}


def measure_prepare(work: Path, sizes: tuple[int, int], figures: Figures) -> None:
    """prepare() in a fresh process on videoinfo rows at the release's density with their manifests,
    at two sizes: the differences give the CPU time and the memory of one more clip."""
    small, big = (_prepare_run(work, rows) for rows in sizes)
    clips = (small["clips"], big["clips"])
    rate, marginal = _marginal(clips, (small["cpu_s"], big["cpu_s"]))
    figures.add("prepare_clips_per_s", rate, "training clips per CPU-second (one core)", 1,
                f"python benchmarks/unit_costs.py --only prepare: prepare() + table writes on {clips[0]} and "
                f"{clips[1]} clips", marginal=marginal, frames_per_clip=big["frames"] / big["clips"])
    per_clip, marginal = _marginal(clips, (small["peak"], big["peak"]))
    figures.add("prepare_rss_bytes_per_clip", 1 / per_clip, "bytes of peak memory per additional clip", "-",
                "(same runs: difference of the peak RSS)", marginal=marginal, peak_rss_mb=big["peak"] / 2**20)


# ------------------------------------------------------------------------------------- validate


def _validate_run(work: Path, fraction: float) -> dict:
    from benchmarks import validate_scale
    from lpr_core.validation.params import load_validate_params

    names = ("N_QUERIES", "N_FRAMES", "N_GALLERY", "N_BOXED", "N_TITLES")
    sizes = {k: max(20, round(getattr(validate_scale, k) * fraction)) for k in names}
    root = work / f"validate_scale-{fraction:g}"
    with mock.patch.multiple(validate_scale, **sizes):
        validate_scale.make_data(root, load_validate_params(REPO / "params.yaml").image_size)
    r = run_child([sys.executable, str(REPO / "benchmarks" / "validate_scale.py"), "--out", str(root), "--keep"])
    lines = r["stdout"].splitlines()
    rows = sum(json.loads(next(x for x in lines if x.startswith("rows per check table:")).split(":", 1)[1]).values())
    result = dict(kv.split("=", 1) for kv in lines[-1].split()[1:])
    if result["success"] != "True":
        raise RuntimeError(f"validate_scale.py did not pass:\n{r['stdout'][-3000:]}")
    print(f"  validate of {rows} check rows: {float(result['seconds']):.1f} s wall, {result['cpu_seconds']} CPU-s, "
          f"peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    return {"rows": rows, "cpu_s": float(result["cpu_seconds"]), "peak": r["peak_rss_bytes"], "frames": sizes["N_FRAMES"]}


def measure_validate(work: Path, fractions: tuple[float, float], figures: Figures) -> None:
    """benchmarks/validate_scale.py in a fresh process on its data at two fractions of LPR4M test
    scale: the differences give the CPU time and the memory of one more check-table row."""
    small, big = (_validate_run(work, f) for f in fractions)
    rows = (small["rows"], big["rows"])
    rate, marginal = _marginal(rows, (small["cpu_s"], big["cpu_s"]))
    figures.add("validate_rows_per_s", rate, "check-table rows per CPU-second (2 reader workers)", 1,
                f"python benchmarks/validate_scale.py --keep on its data at {fractions[0]:g} and {fractions[1]:g} "
                f"x LPR4M test scale ({small['frames']} and {big['frames']} test frames)", marginal=marginal)
    per_row, marginal = _marginal(rows, (small["peak"], big["peak"]))
    figures.add("validate_rss_bytes_per_row", 1 / per_row, "bytes of peak memory per additional check row", "-",
                "(same runs: difference of the peak RSS)", marginal=marginal, peak_rss_mb=big["peak"] / 2**20)


# ------------------------------------------------------------------------------- decode, embed


def measure_decode(stored: list[Path], seconds: float, figures: Figures) -> None:
    """Stored 224 px JPEGs decoded with PIL and put through the paper's training transform."""

    from benchmarks.gpu_check import DecodedClips, paper_section
    from lpr_core.data.transforms import CLIP_MEAN, CLIP_STD, build_train_transform

    data = paper_section()["data"]
    blobs = [p.read_bytes() for p in stored[:256]]
    transform = build_train_transform(IMAGE_SIZE, mean=CLIP_MEAN, std=CLIP_STD, scale=(data["crop_scale_min"], 1.0),
                                      color_jitter=data["color_jitter"], hflip=data["hflip"])
    clips = DecodedClips(blobs, frames=10, length=10**6, transform=transform)
    with one_thread():  # as in a DataLoader worker (more threads only spin on these small tensors)
        clips[0]
        frames, i = 0, 1
        c0, t0 = time.process_time(), time.perf_counter()
        while time.process_time() - c0 < seconds:
            frames += clips[i]["frames"].shape[0] + 1
            i += 1
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    figures.add("decode_frames_per_s_core", frames / cpu, "224 px frames decoded + transformed per CPU-second", 1,
                "python benchmarks/unit_costs.py --only decode: gpu_check.DecodedClips (PIL + the paper's training "
                "transform) over the JPEGs the download stored", wall_frames_per_s=frames / wall)


def _encoders():
    from benchmarks.gpu_check import paper_section
    from lpr_core.config import from_mapping, load_section
    from lpr_core.training.tasks import TrainEncoderParams

    demo = load_section(TrainEncoderParams, "train_encoder", REPO / "params.yaml").model
    section = paper_section()
    section["model"]["weights"] = "none"  # randomly initialised: the time does not depend on the weights
    paper = from_mapping(TrainEncoderParams, section, where="presets/rice_paper.yaml").model
    return demo, paper


def measure_embedding(batches: int, count_train: bool, figures: Figures) -> None:
    """embed_images of the encoder at the demo and the paper's settings on one thread; FLOPs per image."""
    import torch

    from lpr_core.models.encoder import build_encoder, embed_images

    for key, config, batch in (("embed_img_per_s_cpu", _encoders()[0], 64),
                               ("embed_img_per_s_cpu_paper", _encoders()[1], 16)):
        torch.manual_seed(0)
        model = build_encoder(config).eval()
        x = torch.randn(batch, 3, config.image_size, config.image_size)
        with one_thread():
            embed_images(model, [{"image": x}])  # warm-up
            c0, t0 = time.process_time(), time.perf_counter()
            emb = embed_images(model, [{"image": x}] * batches)
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        assert emb.shape == (batch * batches, config.embed_dim)
        figures.add(key, batch * batches / cpu, f"images per CPU-second, {config.backbone} at {config.image_size} px",
                    1, f"python benchmarks/unit_costs.py --only embed: embed_images, {batches} batches of {batch}, "
                    "one thread", wall_img_per_s=batch * batches / wall)
    with one_thread():
        count_flops(model, config, count_train, figures)


def count_flops(model, config, count_train: bool, figures: Figures) -> None:
    """GFLOP per image of the paper's encoder: its forward, and a training step (counted, or 3x the forward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.gpu_check import count_step_flops
    from lpr_core.training.tasks import EncoderTask

    size, frames = config.image_size, config.num_frames
    counter = FlopCounterMode(display=False)
    with counter:  # training mode: the counter does not see eval's fused attention kernel
        model.train().encode_images(torch.randn(1, 3, size, size))
    fwd = counter.get_total_flops() / 1e9
    figures.add("embed_gflop_per_image", fwd, "GFLOP per image, forward (counted)", "-",
                "torch.utils.flop_counter on encode_images")
    if count_train:
        batch = {"frames": torch.randn(2, frames, 3, size, size), "frame_mask": torch.ones(2, frames, dtype=torch.bool),
                 "image": torch.randn(2, 3, size, size), "label": torch.arange(2)}
        train = count_step_flops(EncoderTask(model, None), batch, None) / (2 * (frames + 1)) / 1e9
        how = "counted: forward + backward of a batch of 2 clips (gpu_check.count_step_flops)"
    else:
        train, how = 3 * fwd, "estimated as 3 x the forward (--quick; the default mode counts it)"
    figures.add("train_gflop_per_image", train, f"GFLOP per image of a training step ({frames + 1} images per clip, "
                "PMD and PFR on)", "-", how, counted=count_train)


# ---------------------------------------------------------------------------------------- index


def measure_index(figures: Figures) -> None:
    """Flat per-livestream indexes at LPR4M test scale (rank_k.py's world): build, search, agreement."""
    import numpy as np

    from benchmarks import rank_k
    from lpr_core.index import IndexSpec, build_index

    gt, query_ids, queries, galleries, sizes = rank_k.make_world(seed=0)
    rows: dict[str, list[int]] = {}
    for i, q in enumerate(query_ids):
        rows.setdefault(q[:36], []).append(i)
    spec = IndexSpec(kind="flat", device="cpu")
    with one_thread():
        c0, t0 = time.process_time(), time.perf_counter()
        indexes = {live: build_index(live, list(g.image_ids), np.asarray(g.embeddings), spec)
                   for live, g in galleries.items()}
        build_cpu, build_wall = time.process_time() - c0, time.perf_counter() - t0
        c0, t0 = time.process_time(), time.perf_counter()
        found = {live: indexes[live].search(queries[r], 10)[1] for live, r in rows.items()}
        search_cpu, search_wall = time.process_time() - c0, time.perf_counter() - t0
        times, cpu_times, _, _ = rank_k.run_ours(gt, query_ids, queries, galleries, repeats=1)
    agree = []
    for live in list(rows)[:10]:  # top-1 against a brute-force search
        g = galleries[live]
        best = np.argmax(queries[rows[live]] @ np.asarray(g.embeddings).T, axis=1)
        agree += [g.image_ids[b] == f[0] for b, f in zip(best, found[live])]
    n = len(query_ids)
    cmd = "python benchmarks/unit_costs.py --only index: rank_k.make_world, lpr_core.index.build_index (flat, cpu)"
    figures.add("index_build_s", build_cpu, f"CPU-seconds for {len(galleries)} flat indexes, {int(sizes.sum())} vectors",
                1, cmd, wall_s=build_wall)
    figures.add("search_queries_per_s", n / search_cpu, "queries per CPU-second, k = 10 in their livestream's index",
                1, cmd, wall_queries_per_s=n / search_wall, top1_agrees=float(np.mean(agree)))
    figures.add("rank_k_s", cpu_times[0], f"CPU-seconds to score {n} queries (evaluate's rank-k, rank_k.py)",
                1, "rank_k.run_ours (one thread)", wall_s=times[0])


# ------------------------------------------------------------------------------------------ DVC


def measure_dvc(work: Path, sizes: tuple[int, int], blobs: list[bytes], figures: Figures) -> None:
    """``dvc add`` and ``dvc push`` (local remote) of directories of ``sizes`` distinct JPEG files."""
    import tracemalloc

    from dvc_data.hashfile.tree import Tree

    dvc = str(Path(sys.executable).with_name("dvc"))
    cpu = {"add": [], "push": []}
    manifest = None
    template = work / "dvc-template"
    template.mkdir()
    run_child([dvc, "init", "--no-scm", "-q"], cwd=template)
    for n in sizes:
        repo = work / f"dvc-{n}"
        shutil.copytree(template, repo)
        config = repo / ".dvc" / "config"  # what `dvc remote add -d store <url>` writes
        config.write_text(config.read_text().replace("[core]\n", "[core]\n    remote = store\n", 1)
                          + f"['remote \"store\"']\n    url = {work / f'dvc-remote-{n}'}\n")
        (repo / "data").mkdir()
        for i in range(n):  # distinct contents: DVC stores equal files once
            (repo / "data" / f"{i:09d}.jpg").write_bytes(blobs[i % len(blobs)] + i.to_bytes(8, "little"))
        for step in ("add", "push"):
            r = run_child([dvc, step, *(["data"] if step == "add" else []), "-q"], cwd=repo)
            cpu[step].append(r["cpu_s"])
            print(f"  dvc {step} of {n} files: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} CPU-s", flush=True)
        manifest = next((repo / ".dvc" / "cache").rglob("*.dir"))
    for step in ("add", "push"):
        rate, marginal = _marginal(sizes, tuple(cpu[step]))
        figures.add(f"dvc_{step}_files_per_s", rate, f"files per CPU-second of dvc {step}", "all (DVC's jobs)",
                    f"python benchmarks/unit_costs.py --only dvc: dvc {step} of {sizes[0]} and {sizes[1]} files "
                    "(local remote)", marginal=marginal)
    buf = os.urandom(32 << 20)
    c0, rounds = time.process_time(), 0
    while time.process_time() - c0 < 1.0:
        hashlib.md5(buf).hexdigest()
        rounds += 1
    figures.add("md5_mb_per_s_core", rounds * len(buf) / 1e6 / (time.process_time() - c0),
                "MB hashed per CPU-second (MD5, DVC's content hash)", 1, "hashlib.md5 over 32 MiB buffers")
    entries = json.loads(manifest.read_text())
    figures.add("dvc_dir_bytes_per_entry", manifest.stat().st_size / len(entries), "bytes per file in the .dir "
                "manifest", "-", f"size of the .dir of {len(entries)} files")
    tracemalloc.start()
    tree = Tree.from_list(json.loads(manifest.read_text()))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del tree
    figures.add("dvc_tree_bytes_per_entry", peak / len(entries), "bytes of memory per file to load the .dir "
                "(dvc_data Tree)", "-", "tracemalloc around json.loads + Tree.from_list")


# --------------------------------------------------------------------------------------- driver


def gpu_assumptions(path: Path | None, base: projection.Assumptions) -> tuple[projection.Assumptions, str]:
    """Assumptions with the GPU figures of a full (not ``--tiny``) ``benchmarks/gpu_check.py --json``
    run when one is given: its training clips/s (x 11 images a clip) and its GPU JPEG decoding rate."""
    if path is None:
        return base, ("no GPU measured: GPU rates = counted FLOPs x assumed MFU "
                      f"{base.gpu_mfu:g} x {base.gpu_name} peak {base.gpu_peak_tflops:g} TFLOP/s")
    got = json.loads(Path(path).read_text())
    if got.get("tiny") or got.get("device") != "cuda":
        raise SystemExit(f"--gpu-json {path}: not a full GPU run of benchmarks/gpu_check.py (tiny or on the CPU)")
    updates = {"gpu_train_img_per_s": got["clips_per_s"] * (base.frames_per_clip + 1)}
    if got.get("gpu_frames_per_s") == got.get("gpu_frames_per_s"):  # not nan
        updates["gpu_decode_frames_per_s"] = got["gpu_frames_per_s"]
    return replace(base, **updates), f"GPU figures measured on {got.get('device_name')} ({path})"


def print_projection(units: dict[str, float], nodes: list[int], gpu_json: Path | None = None,
                     gpu_train_img_per_s: float | None = None) -> None:
    """The projection table, the DVC file limits and the storage price, as docs/scaling.md shows them."""
    projection.check_unit_costs(units)
    a, source = gpu_assumptions(gpu_json, projection.Assumptions())
    if gpu_train_img_per_s:
        a, source = replace(a, gpu_train_img_per_s=gpu_train_img_per_s), f"GPU training at {gpu_train_img_per_s:g} img/s"
    print(f"\nprojection at full LPR4M scale ({source}); wall time (cost) per node count:")
    print(projection.markdown_table(units, nodes, a))
    limit = projection.dvc_file_threshold(units, a)
    print(f"\nDVC directory output: workable up to ~{limit:,} files (per-file work <= {a.dvc_max_seconds:.0f} s "
          f"per push, .dir <= {a.dvc_max_manifest_gib:g} GiB)")
    images = projection.LPR4M.images
    for name, n in (("test set as files", projection.LPR4M.test_frames + projection.LPR4M.test_gallery),
                    ("everything as files", images),
                    (f"everything as webdataset shards of {a.webdataset_samples_per_shard:,}",
                     -(-images // a.webdataset_samples_per_shard))):
        c = projection.dvc_file_costs(n, units, a)
        print(f"  {name}: {n:,} files: per-file work {projection.format_seconds(c['seconds'])} per push, "
              f".dir {c['manifest_gib']:.2f} GiB, DVC memory {c['memory_gib']:.1f} GiB, "
              f"{c['put_usd']:,.2f} USD of PUT requests (first push), {c['get_usd']:,.2f} USD of GET per pull")
    print(f"  storage: {projection.storage_usd_per_month(images, a):,.0f} USD per month for "
          f"{images * a.stored_kb_per_image / 1e9:,.1f} TB at {a.stored_kb_per_image:g} KB per image")


def markdown_unit_costs(record: dict) -> str:
    """The measured figures of a saved run as a Markdown table: value, unit, cores used, how."""
    lines = ["| unit cost | value | unit | cores | measured by |", "| --- | --- | --- | --- | --- |"]
    for key, f in record["figures"].items():
        lines.append(f"| `{key}` | {f['value']:,.4g} | {f['unit']} | {f['cores']} | {f['command']} |")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def main(argv: list[str] | None = None) -> int:
    """Measure (or, with ``--table``, reload) the unit costs and print the projection."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 100 CPU-seconds)")
    parser.add_argument("--only", help=f"comma-separated parts ({','.join(PARTS)}); default all")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"figures written here (default {DEFAULT_JSON})")
    parser.add_argument("--work", type=Path, help="work directory, kept (default: a temporary one, removed)")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 8, 64], help="node counts of the projection")
    parser.add_argument("--table", type=Path, help="print the projection of this JSON's unit costs and exit")
    parser.add_argument("--gpu-json", type=Path, help="figures of benchmarks/gpu_check.py --json for the GPU rates")
    parser.add_argument("--gpu-train-img-per-s", type=float, help="GPU training images/s for the projection "
                        "(e.g. a published figure)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        return {"download": _child_download, "prepare": _child_prepare}[kind](*rest)
    if args.table:
        record = json.loads(args.table.read_text())
        m = record["machine"]
        print(f"{args.table}: {record['mode']} run, {m['cpus']} CPUs, load average {m['load_avg_before'][0]:.1f} "
              f"before and {m['load_avg_after'][0]:.1f} after\n")
        print(markdown_unit_costs(record))
        try:
            print_projection(record["unit_costs"], args.nodes, args.gpu_json, args.gpu_train_img_per_s)
        except ValueError as exc:
            raise SystemExit(f"--table {args.table}: {exc} (rerun the benchmark without --only)") from None
        return 0

    only = set(args.only.split(",")) if args.only else set(PARTS)
    if only - set(PARTS):
        parser.error(f"--only: unknown part(s) {sorted(only - set(PARTS))}; choose from {','.join(PARTS)}")
    mode = "quick" if args.quick else "default"
    sizes = SIZES[mode]
    load_before = os.getloadavg()
    print(f"unit costs ({mode}): {os.cpu_count()} CPUs, load average "
          f"{load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} (1 / 5 / 15 min)", flush=True)
    figures = Figures()
    work = args.work or Path(tempfile.mkdtemp(prefix="lpr-unit-costs-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, dict[str, float]] = {}

    def part(name: str, fn) -> None:
        print(f"\n({name})", flush=True)
        c0, t0 = _cpu_seconds(), time.perf_counter()
        fn()
        timings[name] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu_seconds() - c0, 1)}
        print(f"  ({name}: {timings[name]['wall_s']:.0f} s wall, {timings[name]['cpu_s']:.0f} CPU-s)", flush=True)

    try:
        stored: list[Path] = []
        if only & {"download", "decode", "dvc"}:  # decode and DVC work on the JPEGs the download stored
            part("download", lambda: stored.extend(measure_download(work, sizes["download"], figures)))
        if "parse" in only:
            part("parse", lambda: measure_parse(videoinfo_input(work, sizes["parse_rows"]), figures))
        if "prepare" in only:
            part("prepare", lambda: measure_prepare(work, sizes["prepare"], figures))
        if "validate" in only:
            part("validate", lambda: measure_validate(work, sizes["validate"], figures))
        if "decode" in only:
            part("decode", lambda: measure_decode(stored, sizes["decode_s"], figures))
        if "embed" in only:
            part("embed", lambda: measure_embedding(sizes["embed_batches"], sizes["count_train_flops"], figures))
        if "index" in only:
            part("index", lambda: measure_index(figures))
        if "dvc" in only:
            part("dvc", lambda: measure_dvc(work, sizes["dvc"], [p.read_bytes() for p in stored[:64]], figures))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    seconds = time.perf_counter() - t_start
    record = {
        "mode": mode,
        "seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": load_after,
                    "python": platform.python_version(), "shared": load_before[0] > (os.cpu_count() or 1)},
        "part_seconds": timings,
        "unit_costs": figures.values,
        "figures": figures.meta,
        "units": {k: projection.UNIT_COSTS.get(k, figures.meta[k]["unit"]) for k in figures.values},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"\nfigures: {args.json} ({seconds:.0f} s; load average {load_after[0]:.1f} on {os.cpu_count()} CPUs "
          f"at the end{': a shared machine, read the CPU-second rates' if record['machine']['shared'] else ''})")
    if set(projection.UNIT_COSTS) <= set(figures.values):
        print_projection(figures.values, args.nodes, args.gpu_json, args.gpu_train_img_per_s)
    print("RESULT " + " ".join(f"{k}={_fmt(v)}" for k, v in figures.values.items())
          + f" load_avg={load_after[0]:.1f} seconds={seconds:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
