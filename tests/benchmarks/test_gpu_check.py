"""``benchmarks/gpu_check.py``: its parts against oracles, and the whole script at ``--tiny`` size
(the CPU run CI keeps working; on a GPU machine the same script measures the paper's setting)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[2]


def parse_result(line: str) -> dict[str, float | str]:
    """``RESULT k=v ...`` -> values (numbers as floats, ``nan`` included; words as strings)."""
    assert line.startswith("RESULT "), line
    out: dict[str, float | str] = {}
    for token in line.split()[1:]:
        key, sep, value = token.partition("=")
        assert sep and key and value, token
        try:
            out[key] = float(value)
        except ValueError:
            assert value.isidentifier(), token
            out[key] = value
    return out


@pytest.mark.parametrize(
    "name,peak",
    [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
     ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0)],
)
def test_the_peak_follows_the_gpu_name(name, peak):
    assert gpu_check.bf16_peak_tflops(name) == (peak, f"{name} datasheet, dense bf16")


def test_an_unknown_gpu_or_no_gpu_has_no_peak_unless_given():
    assert math.isnan(gpu_check.bf16_peak_tflops(None)[0])
    value, why = gpu_check.bf16_peak_tflops("NVIDIA T4")
    assert math.isnan(value) and "--peak-tflops" in why
    assert gpu_check.bf16_peak_tflops("NVIDIA T4", 65.0) == (65.0, "--peak-tflops")


def test_jpeg_batches_cross_as_one_buffer_and_split_back():
    from torchvision.io import decode_jpeg

    blobs = gpu_check.synthetic_jpegs(5, (24, 40))
    assert len(set(blobs)) == 5 and all(b[:2] == b"\xff\xd8" for b in blobs)
    clips = gpu_check.JpegClips(blobs, frames=2, length=4)
    data, lengths = gpu_check.jpeg_batch([clips[0], clips[1]])
    assert data.dtype == torch.uint8 and lengths.tolist() == [len(blobs[k % 5]) for k in range(6)]
    parts = gpu_check.split_jpegs(data, lengths)
    assert [bytes(p.numpy()) for p in parts] == [blobs[k % 5] for k in range(6)]
    assert all(im.shape == (3, 40, 24) for im in decode_jpeg(parts))


def test_batched_crops_stay_inside_each_image_and_normalise():
    # constant images of two sizes: every crop of one is its colour, and no padding leaks in
    colours = [10, 200, 90]
    images = [torch.full((3, 40, 24), colours[0], dtype=torch.uint8), torch.full((3, 20, 60), colours[1], dtype=torch.uint8),
              torch.full((3, 40, 24), colours[2], dtype=torch.uint8)]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    out = gpu_check.random_resized_crops(images, 16, (0.3, 1.0), True, mean, std, torch.Generator().manual_seed(1))
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    for k, c in enumerate(colours):
        expected = (c / 255 - torch.tensor(mean)) / torch.tensor(std)
        torch.testing.assert_close(out[k], expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-4, rtol=0)


def test_crops_resample_the_chosen_box():
    # a horizontal ramp: a crop's mean column value is its box's centre, so crops differ and flips mirror
    ramp = torch.arange(64, dtype=torch.float32).repeat(3, 32, 1).to(torch.uint8)  # [3, 32, 64]
    gen = torch.Generator().manual_seed(0)
    out = gpu_check.random_resized_crops([ramp] * 8, 8, (0.2, 0.5), False, (0, 0, 0), (1 / 255,) * 3, gen)
    rows = out[:, 0, 0, :]  # pixel values (mean 0, std 1/255)
    assert (rows[:, 1:] >= rows[:, :-1]).all() and (rows[:, -1] > rows[:, 0]).all()  # increasing: not flipped
    assert len({round(float(r[0]), 1) for r in rows}) > 1  # different boxes
    assert rows.min() >= 0 and rows.max() <= 63


def test_result_line_round_trips():
    line = gpu_check.result_line({"mfu": 0.41234, "clips_per_s": 123456.7, "device": "cuda", "x": float("nan"), "n": 3})
    assert line == "RESULT mfu=0.4123 clips_per_s=123457 device=cuda x=nan n=3"
    parsed = parse_result(line)
    assert parsed["mfu"] == pytest.approx(0.4123) and parsed["device"] == "cuda" and math.isnan(parsed["x"])


@pytest.mark.slow
def test_tiny_run_prints_parseable_results_ending_with_all_keys(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--json", str(tmp_path / "out.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    results = [parse_result(line) for line in lines if line.startswith("RESULT ")]
    assert len(results) == 5  # one per part, then the whole
    final = parse_result(lines[-1])
    for part in results[:-1]:
        assert set(part) <= set(final)
        assert {k: str(v) for k, v in part.items()} == {k: str(final[k]) for k in part}
    required = {"mfu", "clips_per_s", "loader_frames_per_s", "gpu_frames_per_s", "faiss_device",
                "faiss_queries_per_s", "gpu_tests_passed", "gpu_tests_failed", "gpu_tests_skipped"}
    assert required <= set(final)
    assert final["tiny"] == 1 and final["device"] == "cpu" and final["failed_parts"] == 0
    assert final["clips_per_s"] > 0 and final["train_frames_per_s"] == pytest.approx(final["clips_per_s"] * 3, rel=1e-3)
    assert final["step_tflop"] > 0 and math.isnan(final["mfu"])  # no GPU: no peak to compare with
    assert final["loader_frames_per_s"] > 0 and final["device_decode_frames_per_s"] > 0
    assert final["faiss_device"] in ("cpu", "gpu") and final["faiss_agree"] == 1.0
    assert final["gpu_tests_failed"] == 0 and final["gpu_tests_skipped"] >= 1  # collected, skipped on the CPU
    saved = (tmp_path / "out.json").read_text()
    assert '"loader_frames_per_s"' in saved
