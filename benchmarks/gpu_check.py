"""The GPU check: the paper's encoder setting measured on one GPU, in one prepared run (<= 8 min on an H100).

Four parts, each printing its figures and a ``RESULT`` line:

(a) **training step** at the paper's settings (``presets/rice_paper.yaml`` applied to ``params.yaml``:
    CLIP ViT-B/32 tower, 224 px, T = 10, d = 512, PMD and PFR, batch 128) as the training loop runs
    it: bf16 autocast, ``torch.compile``, channels-last, fused AdamW over the project's parameter
    groups. The batch lives on the GPU (random tensors), so this is the model's rate, not the data's.
    FLOPs of one step (forward + backward) are counted with ``torch.utils.flop_counter``; model FLOP
    utilisation = FLOPs x steps/s / the GPU's dense bf16 peak (goal >= 0.40). An eager run is timed
    too. ``RESULT mfu=<x> clips_per_s=<n> ...``
(b) **data loader** at 224 px, 10-frame clips (+ the shop image) from JPEG bytes in memory: CPU
    workers decoding with PIL and running the training transform (as the training dataset does),
    against GPU JPEG decoding (``torchvision.io.decode_jpeg(..., device="cuda")``, random resized
    crops of the whole batch in one ``roi_align``); both against the rate the training step of (a)
    consumes. ``RESULT loader_frames_per_s=<n> gpu_frames_per_s=<n> ...`` ("frames" counts every
    decoded image: T frames and one shop image per clip).
(c) **faiss at LPR4M test scale**: 66,358 gallery images in 110 per-livestream indexes (the
    project's :mod:`lpr_core.index`), 20,079 queries each searched in its own livestream's
    gallery, k = 10; on the GPU when a faiss GPU build is importable, else faiss-cpu (said so).
(d) the ``gpu``-marked tests (``pytest -m gpu`` on the test files that hold such tests).

The last line is one ``RESULT`` line with every key. A part that fails prints its error and the run
goes on (its keys are ``nan``); the exit status is then 1.

``--tiny`` (automatic when no CUDA device is visible) runs the same code at toy size on the CPU (a
tiny open_clip ViT from a JSON config, 32 px, 2 frames, a few hundred gallery vectors), in about a
minute, so CI keeps the script working.

On the device machine (its own Python 3.12 and PyTorch): open_clip_torch 3.3.0, ftfy 6.3.1, wcwidth
0.9.4 and faiss-cpu 1.15.1 travel as wheels (about 21 MB for Python 3.12, manylinux x86-64; the
faiss-gpu 1.15.1 wheel alone is 129 MiB, over the 64 MiB that travels, so (c) times faiss-cpu
there and says so)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log

Here (CPU, CI)::

    python benchmarks/gpu_check.py --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

#: Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device name, most specific first.
BF16_PEAK_TFLOPS = (
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    ("H200 NVL", 835.0),
    ("H200", 989.4),  # SXM (also GH200)
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)
#: LPR4M test set: gallery images, livestreams, query clips (the release's test files)
LPR4M_TEST = {"images": 66_358, "galleries": 110, "queries": 20_079}
#: The toy open_clip ViT of --tiny (open_clip's JSON model config format)
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
NAN = float("nan")


# ------------------------------------------------------------------------------------- settings


@dataclasses.dataclass
class Setting:
    """What the check runs: the encoder and training settings and the sizes of each part."""

    tiny: bool
    device: torch.device
    model: object  # EncoderConfig
    train: object  # TrainConfig
    data: object  # EncoderDataConfig
    timed_steps: int
    loader_seconds: float
    loader_workers: int
    frame_size: tuple[int, int]  # (width, height) of a downloaded frame
    gallery: dict[str, int]
    dim: int


def paper_section() -> dict:
    """``params.yaml``'s ``train_encoder`` section with ``presets/rice_paper.yaml`` applied (checked
    by the same code as ``lpr params apply``)."""
    from lpr_core.config import load_params
    from lpr_core.params_overrides import check_overrides, load_preset

    params_path = REPO / "params.yaml"
    overrides = load_preset("rice_paper", params_path)
    return check_overrides(load_params(params_path), overrides, where="presets/rice_paper.yaml")["train_encoder"]


def build_setting(tiny: bool, device: torch.device, workdir: Path, max_workers: int) -> Setting:
    """The paper's setting, or its toy version (a tiny open_clip ViT at 32 px, 2 frames)."""
    from lpr_core.config import from_mapping
    from lpr_core.training.tasks import TrainEncoderParams

    section = paper_section()
    model = section["model"]
    train = section["train"]
    model["weights"] = "none"  # the FLOPs and the time of a step do not depend on the starting weights
    if tiny:
        config = workdir / "gpu-check-tiny-vit.json"
        config.write_text(json.dumps(TINY_CLIP), encoding="utf-8")
        model.update(backbone=f"open_clip:{config}", image_size=32, num_frames=2, embed_dim=32, decoder_dim=32, heads=2)
        train.update(batch_size=4)
    params = from_mapping(TrainEncoderParams, section, where="presets/rice_paper.yaml")
    workers = min(max_workers, os.cpu_count() or 1)
    return Setting(
        tiny=tiny,
        device=device,
        model=params.model,
        train=params.train,
        data=params.data,
        timed_steps=3 if tiny else 30,
        loader_seconds=3.0 if tiny else 20.0,
        loader_workers=min(2, workers) if tiny else workers,
        frame_size=(40, 71) if tiny else (224, 398),  # keep_ratio: the short side at the model size, 9:16 frames
        gallery={"images": 240, "galleries": 4, "queries": 60} if tiny else dict(LPR4M_TEST),
        dim=params.model.embed_dim,
    )


def bf16_peak_tflops(device_name: str | None, override: float | None = None) -> tuple[float, str]:
    """The dense bf16 peak (TFLOP/s) of a GPU by its name, and where the figure comes from; nan when
    unknown (no GPU, or a GPU not in :data:`BF16_PEAK_TFLOPS`: pass ``--peak-tflops``)."""
    if override:
        return override, "--peak-tflops"
    if not device_name:
        return NAN, "no GPU"
    for key, peak in BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak, f"{device_name} datasheet, dense bf16"
    return NAN, f"{device_name}: not in the table (pass --peak-tflops)"


# --------------------------------------------------------------------------------- (a) training


def _batch(setting: Setting, batch_size: int) -> dict[str, torch.Tensor]:
    """A random batch on the device, shaped and laid out as the training loop moves it there."""
    m, dev = setting.model, setting.device
    g = torch.Generator(device=dev).manual_seed(0)
    s, t = m.image_size, m.num_frames
    return {
        "frames": torch.randn(batch_size, t, 3, s, s, generator=g, device=dev),
        "frame_mask": torch.ones(batch_size, t, dtype=torch.bool, device=dev),
        "image": torch.randn(batch_size, 3, s, s, generator=g, device=dev).contiguous(memory_format=torch.channels_last),
        "label": torch.arange(batch_size, device=dev),
    }


def count_step_flops(task, batch: dict, dtype: torch.dtype | None) -> float:
    """FLOPs of one forward + backward of the task's model on ``batch`` (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(batch["frames"].device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        task.step(task.model, batch)["loss"].backward()
    task.model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _timed_steps(step, steps: int, device: torch.device, deadline: float) -> tuple[float, int]:
    """Median seconds per step over up to ``steps`` steps (stopping at ``deadline``)."""
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline and len(times) >= 3:
            break
    return float(np.median(times)), len(times)


def check_training(setting: Setting, peak_tflops: float, peak_source: str, deadline: float, compile_model: bool) -> dict:
    """(a): steps/s, clips/s and MFU of the training step (eager, then compiled)."""
    from lpr_core.models.encoder import build_encoder
    from lpr_core.training.engine import amp_dtype, param_groups
    from lpr_core.training.tasks import EncoderTask

    dev, cfg = setting.device, setting.train
    dtype = amp_dtype(cfg.amp, dev)
    torch.manual_seed(0)
    model = build_encoder(setting.model).to(dev)
    task = EncoderTask(model, None)  # the training loop's step: model(frames, frame_mask, image, label)
    if cfg.channels_last:  # as the training loop does
        model.to(memory_format=torch.channels_last)
        model.channels_last = True
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, cfg.adam_beta2),
                                  fused=dev.type == "cuda")
    batch_size = cfg.batch_size
    while True:  # the paper's batch, halved until it fits the GPU
        try:
            batch = _batch(setting, batch_size)
            flops = count_step_flops(task, batch, dtype)
            break
        except torch.cuda.OutOfMemoryError:
            if batch_size <= 8:
                raise
            batch_size //= 2
            batch = None
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            print(f"  out of GPU memory: batch {batch_size * 2} -> {batch_size}")

    def make_step(net):
        autocast = torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                out = task.step(net, batch)
            out["loss"].backward()
            if cfg.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            optimizer.step()

        return step

    eager = make_step(model)
    eager()  # warm-up: allocator, cuDNN/cuBLAS heuristics, AdamW state
    eager_s, eager_n = _timed_steps(eager, max(3, setting.timed_steps // 3), dev, deadline)
    step_s, timed, compiled, compile_s = eager_s, eager_n, 0, 0.0
    if compile_model and cfg.compile and dev.type == "cuda":  # the training loop compiles on CUDA only
        try:
            compiled_step = make_step(torch.compile(model))
            start = time.perf_counter()
            for _ in range(3):  # compilation, and the recompile for the mined pairs' count
                compiled_step()
            torch.cuda.synchronize(dev)
            compile_s = time.perf_counter() - start
            step_s, timed = _timed_steps(compiled_step, setting.timed_steps, dev, deadline)
            compiled = 1
        except Exception as exc:  # noqa: BLE001 - report and keep the eager figure
            print(f"  torch.compile failed, eager figures reported: {type(exc).__name__}: {exc}")
    m = setting.model
    images_per_step = batch_size * (m.num_frames + 1)
    achieved = flops / step_s
    mfu = achieved / (peak_tflops * 1e12) if peak_tflops == peak_tflops else NAN
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else NAN
    print(f"  {m.backbone} {m.image_size}px, T={m.num_frames}, d={m.embed_dim}, pmd={m.pmd} pfr={m.pfr}, "
          f"batch {batch_size} clips ({images_per_step} images/step), amp={dtype}, channels_last={cfg.channels_last}")
    print(f"  FLOPs/step (fwd+bwd): {flops / 1e12:.3f} TFLOP; peak {peak_tflops:.0f} TFLOP/s ({peak_source})")
    print(f"  eager: {eager_s * 1e3:.1f} ms/step ({eager_n} steps); compiled={compiled}: {step_s * 1e3:.1f} ms/step "
          f"({timed} steps, compile+warm-up {compile_s:.0f} s); peak memory {mem:.1f} GiB")
    print(f"  achieved {achieved / 1e12:.1f} TFLOP/s, MFU {mfu:.3f} (goal >= 0.40)")
    return {
        "mfu": mfu,
        "clips_per_s": batch_size / step_s,
        "steps_per_s": 1.0 / step_s,
        "eager_clips_per_s": batch_size / eager_s,
        "step_tflop": flops / 1e12,
        "train_batch": batch_size,
        "compiled": compiled,
        "train_frames_per_s": images_per_step / step_s,
        "peak_mem_gib": mem,
    }


# ------------------------------------------------------------------------------ (b) data loader


def synthetic_jpegs(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """``count`` distinct photo-like JPEGs (smooth colour fields, shapes, mild noise) of ``size``."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(count):
        base = rng.integers(0, 256, size=(4, 3, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            x1, y1 = x0 + int(rng.integers(4, max(5, w // 2))), y0 + int(rng.integers(4, max(5, h // 2)))
            draw.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        arr = np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, size=(h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


class DecodedClips(torch.utils.data.Dataset):
    """Clips as the training dataset yields them: each of T frames and the shop image decoded with
    PIL from JPEG bytes and put through the training transform."""

    def __init__(self, blobs: list[bytes], frames: int, length: int, transform) -> None:
        self.blobs, self.frames, self.length, self.transform = blobs, frames, length, transform

    def __len__(self) -> int:
        return self.length

    def _image(self, k: int) -> torch.Tensor:
        from PIL import Image

        return self.transform(Image.open(io.BytesIO(self.blobs[k % len(self.blobs)])).convert("RGB"))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        first = i * (self.frames + 1)
        frames = torch.stack([self._image(first + j) for j in range(self.frames)])
        return {"frames": frames, "image": self._image(first + self.frames)}


class JpegClips(torch.utils.data.Dataset):
    """Clips as undecoded JPEG bytes: T frames then the shop image."""

    def __init__(self, blobs: list[bytes], frames: int, length: int) -> None:
        self.blobs, self.frames, self.length = blobs, frames, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> list[bytes]:
        first = i * (self.frames + 1)
        return [self.blobs[(first + j) % len(self.blobs)] for j in range(self.frames + 1)]


def jpeg_batch(batch: list[list[bytes]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate of :class:`JpegClips`: the batch's JPEGs in one uint8 buffer and their lengths (one
    shared-memory tensor crosses from the worker, not one per image)."""
    blobs = [blob for clip in batch for blob in clip]
    data = torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)
    return data, torch.tensor([len(b) for b in blobs])


def split_jpegs(data: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """The single JPEGs of a :func:`jpeg_batch` buffer (views, no copy)."""
    return list(torch.split(data, lengths.tolist()))


def random_resized_crops(images: list[torch.Tensor], size: int, scale: tuple[float, float], hflip: bool,
                         mean, std, generator: torch.Generator) -> torch.Tensor:
    """The training transform of a whole batch on its device: a random resized crop of each decoded
    uint8 ``[3, H, W]`` image (area share in ``scale``, aspect 3/4..4/3) resampled to ``size`` in one
    ``roi_align``, a random horizontal flip, normalisation. Returns ``[N, 3, size, size]`` float."""
    from torchvision.ops import roi_align

    dev = images[0].device
    n = len(images)
    hw = torch.tensor([im.shape[1:] for im in images], dtype=torch.float32)
    if all(im.shape == images[0].shape for im in images):
        batch = torch.stack(images)
    else:  # frames of several sizes: pad to the largest, crops stay inside each image
        batch = images[0].new_zeros(n, 3, int(hw[:, 0].max()), int(hw[:, 1].max()))
        for k, im in enumerate(images):
            batch[k, :, : im.shape[1], : im.shape[2]] = im
    # boxes end half a pixel inside the bottom-right edge: bilinear samples then never reach the
    # padding of a smaller image in a mixed-size batch
    h, w = hw[:, 0] - 0.5, hw[:, 1] - 0.5
    area = h * w * torch.empty(n).uniform_(*scale, generator=generator)
    ratio = torch.exp(torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator))
    cw = torch.sqrt(area * ratio).clamp(max=w)
    ch = torch.sqrt(area / ratio).clamp(max=h)
    x0 = (w - cw) * torch.rand(n, generator=generator)
    y0 = (h - ch) * torch.rand(n, generator=generator)
    boxes = torch.stack([torch.arange(n, dtype=torch.float32), x0, y0, x0 + cw, y0 + ch], dim=1).to(dev)
    out = roi_align(batch.float(), boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(dev)
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    mean_t = torch.tensor(mean, device=dev).view(1, 3, 1, 1) * 255.0
    std_t = torch.tensor(std, device=dev).view(1, 3, 1, 1) * 255.0
    return (out - mean_t) / std_t


def _loader(dataset, setting: Setting, batch_size: int, collate=None):
    workers = setting.loader_workers
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
        pin_memory=setting.device.type == "cuda" and collate is None, drop_last=True,
        persistent_workers=False, prefetch_factor=2 if workers else None,
    )


def _rate(batches, consume, images_per_batch: int, seconds: float, device: torch.device) -> tuple[float, int]:
    """Images per second drawn through ``consume`` over ``seconds`` (after one warm-up batch)."""
    it = iter(batches)
    consume(next(it))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, n = time.perf_counter(), 0
    for batch in it:
        consume(batch)
        n += 1
        if time.perf_counter() - start > seconds:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n * images_per_batch / (time.perf_counter() - start), n


def check_loader(setting: Setting, train_frames_per_s: float) -> dict:
    """(b): frames/s of CPU workers (PIL + training transform) and of GPU JPEG decoding."""
    from torchvision.io import decode_jpeg

    from lpr_core.data.transforms import CLIP_MEAN, CLIP_STD, build_train_transform

    m, d, dev = setting.model, setting.data, setting.device
    mean, std = CLIP_MEAN, CLIP_STD  # the CLIP tower's normalisation
    blobs = synthetic_jpegs(16 if setting.tiny else 256, setting.frame_size)
    per_clip = m.num_frames + 1
    batch = setting.train.batch_size
    # CPU workers hand over float pixels: 128 clips of 11 images at 224 px are 0.8 GB a batch, and
    # workers x prefetch batches sit in shared memory at once, so they work in batches of 32 clips
    # (the rate per frame hardly depends on it); GPU decoding takes the training batch of JPEGs
    cpu_batch = min(batch, 32)
    batches = 8 if setting.tiny else 400
    kb = sum(map(len, blobs)) / len(blobs) / 1024
    print(f"  {len(blobs)} distinct JPEGs of {setting.frame_size[0]}x{setting.frame_size[1]} ({kb:.0f} KiB each), "
          f"clips of {m.num_frames} frames + 1 image; {setting.loader_workers} workers; batches of {cpu_batch} clips "
          f"(CPU decoding), {batch} (device decoding)")

    transform = build_train_transform(m.image_size, mean=mean, std=std, scale=(d.crop_scale_min, 1.0),
                                      color_jitter=d.color_jitter, hflip=d.hflip)

    def to_device(b):
        return b["frames"].to(dev, non_blocking=True), b["image"].to(dev, non_blocking=True)

    decoded = DecodedClips(blobs, m.num_frames, cpu_batch * batches, transform)
    cpu_rate, cpu_batches = _rate(_loader(decoded, setting, cpu_batch), to_device, cpu_batch * per_clip,
                                  setting.loader_seconds, dev)
    print(f"  CPU workers (PIL + transform): {cpu_rate:,.0f} frames/s ({cpu_batches} batches)")
    decode_device = "cuda" if dev.type == "cuda" else "cpu"
    gen = torch.Generator().manual_seed(0)

    def decode(packed):
        jpegs = split_jpegs(*packed)
        images = decode_jpeg(jpegs, device=decode_device)
        out = random_resized_crops(images, m.image_size, (d.crop_scale_min, 1.0), d.hflip, mean, std, gen)
        assert out.shape == (len(jpegs), 3, m.image_size, m.image_size)

    failed = False
    try:
        jpegs = _loader(JpegClips(blobs, m.num_frames, batch * batches), setting, batch, collate=jpeg_batch)
        dev_rate, dev_batches = _rate(jpegs, decode, batch * per_clip, setting.loader_seconds, dev)
        print(f"  {decode_device} JPEG decoding + batched crops: {dev_rate:,.0f} frames/s ({dev_batches} batches)")
    except Exception as exc:  # noqa: BLE001 - keep the CPU figure, report the failure
        traceback.print_exc()
        print(f"  {decode_device} JPEG decoding FAILED: {type(exc).__name__}: {exc}")
        dev_rate, failed = NAN, True
    mb_float = batch * per_clip * 3 * m.image_size**2 * 4 / 2**20
    mb_jpeg = batch * per_clip * kb / 1024
    needed = train_frames_per_s
    print(f"  the training step consumes {needed:,.0f} frames/s; a training batch is {mb_float:,.0f} MiB of float "
          f"pixels to send to the GPU (CPU decoding) or {mb_jpeg:,.1f} MiB of JPEG (GPU decoding)")
    if needed == needed:
        for name, rate in (("CPU workers", cpu_rate), (f"{decode_device} JPEG decoding", dev_rate)):
            verdict = "keeps up with" if rate >= needed else f"feeds {rate / needed:.0%} of"
            print(f"  {name}: {verdict} the training step")
    return {
        "loader_frames_per_s": cpu_rate,
        "gpu_frames_per_s": dev_rate if decode_device == "cuda" else NAN,
        "device_decode_frames_per_s": dev_rate,
        "loader_workers": setting.loader_workers,
        "loader_keeps_up": float(cpu_rate >= needed) if needed == needed else NAN,
        "gpu_decode_keeps_up": float(dev_rate >= needed) if needed == needed and decode_device == "cuda" else NAN,
        "_failed": failed,
    }


# ------------------------------------------------------------------------------------- (c) faiss


def check_faiss(setting: Setting) -> dict:
    """(c): per-livestream flat indexes at LPR4M test scale: build and search times, queries/s."""
    from lpr_core.index import IndexSpec, build_index, faiss_gpu_available

    try:
        import faiss  # noqa: F401
    except ImportError:
        faiss = None
    sizes = setting.gallery
    rnd, rng = random.Random(0), np.random.default_rng(0)
    n_gal, n_img, n_q = sizes["galleries"], sizes["images"], sizes["queries"]
    per_gallery = [n_img // n_gal + (1 if g < n_img % n_gal else 0) for g in range(n_gal)]
    per_query = [n_q // n_gal + (1 if g < n_q % n_gal else 0) for g in range(n_gal)]
    dim = setting.dim

    def unit(n):
        x = rng.normal(size=(n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    galleries = [(str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                  [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(n)], unit(n)) for n in per_gallery]
    queries = [unit(n) for n in per_query]
    print(f"  {n_img:,} gallery vectors (d={dim}) in {n_gal} livestream indexes, {n_q:,} queries, k=10")
    if faiss is None:
        print("  faiss is not importable here: no faiss figures (the torch exact search below is the reference)")
        device = "none"
    elif faiss_gpu_available():
        device = "gpu"
    else:
        print("  no faiss GPU build here (faiss-cpu, or no GPU visible): faiss-cpu timings")
        device = "cpu"
    out = {"faiss_device": device, "faiss_build_s": NAN, "faiss_search_s": NAN, "faiss_queries_per_s": NAN,
           "faiss_agree": NAN}
    if faiss is not None:
        spec = IndexSpec(kind="flat", device=device)
        start = time.perf_counter()
        indexes = [build_index(live, ids, x, spec) for live, ids, x in galleries]
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        found = [index.search(q, 10)[1] for index, q in zip(indexes, queries)]
        search_s = time.perf_counter() - start
        agree = []
        for (_, ids, x), q, got in list(zip(galleries, queries, found))[:10]:  # exact top-1, brute force
            agree += [ids[j] == row[0] for j, row in zip(np.argmax(q @ x.T, axis=1), got)]
        out.update(faiss_build_s=build_s, faiss_search_s=search_s, faiss_queries_per_s=n_q / search_s,
                   faiss_agree=float(np.mean(agree)))
        print(f"  faiss ({device}): build {build_s:.2f} s, search {search_s:.2f} s = {n_q / search_s:,.0f} queries/s, "
              f"top-1 agrees with the exact search on {np.mean(agree):.1%}")
    dev = setting.device
    start = time.perf_counter()
    for (_, _, x), q in zip(galleries, queries):
        torch.topk(torch.from_numpy(q).to(dev) @ torch.from_numpy(x).to(dev).T, k=min(10, x.shape[0]), dim=1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    torch_s = time.perf_counter() - start
    out["torch_search_queries_per_s"] = n_q / torch_s
    print(f"  torch exact search on {dev.type}, for reference: {n_q / torch_s:,.0f} queries/s")
    return out


# ------------------------------------------------------------------------------------- (d) tests


def gpu_test_files() -> list[str]:
    """Test files holding ``gpu``-marked tests."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                  if "mark.gpu" in p.read_text(encoding="utf-8"))


def check_gpu_tests(timeout: float) -> dict:
    """(d): ``pytest -m gpu`` on the files that hold gpu tests; counts of the outcomes."""
    files = gpu_test_files()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs", *files]
    print(f"  {' '.join(cmd[1:])}")
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
        text = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        text = f"{exc.stdout or ''}\n(timed out after {timeout:.0f} s)"
        proc = None
    tail = [line for line in text.strip().splitlines() if line.strip()][-12:]
    print("\n".join(f"  | {line}" for line in tail))
    counts = {k: 0 for k in ("passed", "failed", "skipped", "error", "deselected")}
    summary = tail[-1] if tail else ""
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary):
        counts["error" if word.startswith("error") else word] += int(number)
    bad = counts["failed"] + counts["error"] + (0 if proc is not None else 1)
    return {
        "gpu_tests_passed": counts["passed"],
        "gpu_tests_failed": bad,
        "gpu_tests_skipped": counts["skipped"],
        "gpu_tests_rc": proc.returncode if proc is not None else NAN,
        "_failed": bad > 0 or proc is None or proc.returncode not in (0, 5),  # 5: no test collected
    }


# -------------------------------------------------------------------------------------- driver


def result_line(values: dict) -> str:
    """``RESULT key=value ...``: numbers with 4 significant digits (integers as integers), ``nan``."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float):
            text = "nan" if value != value else (f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}")
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return "RESULT " + " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the four parts and print their figures; the last line is the ``RESULT`` of all."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (automatic without CUDA)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="soft time budget of the whole run (s)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: from its name)")
    parser.add_argument("--workers", type=int, default=16, help="most CPU loader workers (default 16)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (eager figures only)")
    parser.add_argument("--skip", action="append", default=[], choices=("train", "loader", "faiss", "tests"),
                        help="leave a part out (repeatable)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    tiny = args.tiny or not cuda
    device = torch.device("cuda" if cuda and not args.tiny else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"gpu_check: {'tiny' if tiny else 'full'} run on {name}; torch {torch.__version__}, python {sys.version.split()[0]}")
    peak, peak_source = bf16_peak_tflops(name if device.type == "cuda" else None, args.peak_tflops)
    results: dict = {"tiny": int(tiny), "device": device.type}
    failed = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        setting = build_setting(tiny, device, Path(tmp), args.workers)

        def part(key: str, title: str, fn, keys: tuple[str, ...]):
            if key in args.skip:
                results.update({k: NAN for k in keys})
                return
            print(f"\n({title})")
            t0 = time.perf_counter()
            try:
                got = fn()
            except Exception as exc:  # noqa: BLE001 - a failed part is reported, the others still run
                traceback.print_exc()
                print(f"  FAILED: {type(exc).__name__}: {exc}")
                failed.append(key)
                got = {k: NAN for k in keys}
            if got.pop("_failed", False):
                failed.append(key)
            got[f"{key}_s"] = time.perf_counter() - t0
            print(result_line(got))
            results.update(got)

        deadline = start + args.budget_s
        part("train", "a: training step at the paper's settings",
             lambda: check_training(setting, peak, peak_source, start + 0.55 * args.budget_s, not args.no_compile),
             ("mfu", "clips_per_s", "steps_per_s", "train_frames_per_s"))
        part("loader", "b: data loader, 224 px 10-frame clips from JPEG bytes",
             lambda: check_loader(setting, results.get("train_frames_per_s", NAN)),
             ("loader_frames_per_s", "gpu_frames_per_s"))
        part("faiss", "c: faiss at LPR4M test scale", lambda: check_faiss(setting),
             ("faiss_device", "faiss_queries_per_s"))
        part("tests", "d: the gpu-marked tests", lambda: check_gpu_tests(max(90.0, deadline - time.perf_counter())),
             ("gpu_tests_passed", "gpu_tests_failed"))
    results["failed_parts"] = len(failed)
    results["wall_s"] = time.perf_counter() - start
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device_name": name, "failed": failed, **results}, indent=1, default=str))
    print()
    print(result_line(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
