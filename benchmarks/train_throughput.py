"""Throughput of the encoder training step (forward, backward, optimizer) through the real engine.

Two settings:

- ``--setting demo`` (default, CPU): the CPU demo encoder (``--backbone``/``--width``/
  ``--image-size``/``--frames``/``--batch-size`` default to the proposed ``train_encoder``
  demo values), full precision;
- ``--setting paper --device cuda``: the paper's setting, CLIP ViT-B/32 (open_clip when it is
  installed, else torchvision's ``vit_b_32``, same shapes and FLOPs) on 10 frames at 224 px,
  bf16 autocast, PMD and PFR on. Prints clips/s and the model FLOP utilisation (MFU) against
  ``--peak-tflops`` (default: H100 SXM dense bf16, 989 TFLOP/s).

Batches are random tensors held in memory, so the figure is the model step, not JPEG decoding.
FLOPs per step are counted once with ``torch.utils.flop_counter`` (forward + backward).

Usage::

    python benchmarks/train_throughput.py                     # CPU demo setting
    python benchmarks/train_throughput.py --setting paper --device cuda --batch-size 64

The last line is ``RESULT clips_per_s=... images_per_s=... [mfu=...]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lpr_core.models.encoder import EncoderConfig, build_encoder  # noqa: E402
from lpr_core.training.config import TrainConfig  # noqa: E402
from lpr_core.training.engine import fit  # noqa: E402
from lpr_core.training.tasks import EncoderTask  # noqa: E402

DEMO = {"backbone": "resnet18", "width": 32, "image_size": 96, "frames": 4, "batch_size": 16}
PAPER = {"backbone": "vit_b_32", "width": 64, "image_size": 224, "frames": 10, "batch_size": 64}


class RandomPairs(torch.utils.data.Dataset):
    """In-memory random (clip, image) pairs with the shapes of the real dataset."""

    def __init__(self, n: int, frames: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randn(n, frames, 3, size, size, generator=g)
        self.images = torch.randn(n, 3, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        return {
            "frames": self.frames[i],
            "frame_mask": torch.ones(self.frames.shape[1], dtype=torch.bool),
            "image": self.images[i],
            "label": torch.tensor(i),
        }


def count_step_flops(model: torch.nn.Module, batch: dict, device: torch.device, dtype) -> float:
    """FLOPs of one forward + backward of ``model`` on ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = {k: v.to(device) for k, v in batch.items()}
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(batch["frames"], batch["frame_mask"], batch["image"], batch["label"])
        out["loss"].backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=("demo", "paper"), default="demo")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backbone")
    parser.add_argument("--width", type=int)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--no-heads", action="store_true", help="ICL only (PMD and PFR off)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (CUDA only)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (cuda default 989)")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA GPU is visible")

    base = DEMO if args.setting == "demo" else PAPER
    backbone = args.backbone or base["backbone"]
    if args.setting == "paper" and args.backbone is None and importlib.util.find_spec("open_clip") is not None:
        backbone = "open_clip:ViT-B-32"
    width = args.width or base["width"]
    size = args.image_size or base["image_size"]
    frames = args.frames or base["frames"]
    batch = args.batch_size or base["batch_size"]
    config = EncoderConfig(
        backbone=backbone,
        backbone_width=width if backbone.startswith("resnet") and backbone != "resnet50" else 64,
        image_size=size,
        num_frames=frames,
        embed_dim=512 if args.setting == "paper" else 128,
        decoder_dim=512 if args.setting == "paper" else 128,
        heads=8 if args.setting == "paper" else 4,
        pmd=not args.no_heads,
        pfr=not args.no_heads,
        aggregator="transformer",  # the setting these figures were measured with
        dropout=0.0,
    )
    amp = "bf16" if args.device == "cuda" else "off"
    steps = args.warmup + args.steps
    train = TrainConfig(
        max_steps=steps,
        batch_size=batch,
        lr=3e-4,
        weight_decay=0.05,
        adam_beta2=0.98,
        grad_clip_norm=1.0,
        channels_last=True,
        warmup_steps=1,
        amp=amp,
        compile=args.compile,
        checkpoint_every=steps,
        num_workers=0,
        device=args.device,
        progress=False,
        log_every=1,
    )
    torch.manual_seed(0)
    model = build_encoder(config)
    data = RandomPairs(batch * 2, frames, size)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if amp == "bf16" else None
    model.to(device)
    first = {k: torch.stack([data[i][k] for i in range(batch)]) for k in data[0]}
    flops = count_step_flops(model, first, device, dtype)

    stamps: list[float] = []

    def on_step(step: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        fit(EncoderTask(model, data), train, out, on_step_end=on_step)
    durations = [b - a for a, b in zip(stamps[args.warmup - 1 :], stamps[args.warmup :])]
    step_s = statistics.median(durations)
    clips_per_s = batch / step_s
    images_per_s = batch * (frames + 1) / step_s
    achieved = flops / step_s
    print(f"device: {args.device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})")
    print(f"setting: {args.setting} {dataclasses.asdict(config)}")
    print(f"batch {batch} clips x {frames} frames + {batch} images at {size}px, amp={amp}")
    print(f"step: median {step_s * 1000:.1f} ms over {len(durations)} steps (min {min(durations) * 1000:.1f} ms)")
    print(f"FLOPs per step (fwd+bwd): {flops / 1e9:.2f} GFLOP, achieved {achieved / 1e12:.4f} TFLOP/s")
    result = f"RESULT clips_per_s={clips_per_s:.2f} images_per_s={images_per_s:.2f}"
    peak = args.peak_tflops or (989.0 if device.type == "cuda" else None)
    if peak:
        result += f" mfu={achieved / (peak * 1e12):.4f}"
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
