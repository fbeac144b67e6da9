"""``benchmarks/projection.py`` (unit costs -> wall time and cost of full LPR4M on N nodes) against
hand-computed cases, and ``benchmarks/unit_costs.py --quick`` end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import projection as P
from benchmarks import unit_costs

REPO = Path(__file__).resolve().parents[2]
NODES = (1, 2, 4, 8, 16, 64, 256)

#: Plausible unit costs (the order of magnitude measured on a 2-core machine), per CPU-second.
UNITS = {
    "download_img_per_s_core": 60.0,
    "parse_rows_per_s": 9000.0,
    "validate_rows_per_s": 80_000.0,
    "validate_rss_bytes_per_row": 1300.0,
    "prepare_clips_per_s": 3000.0,
    "prepare_rss_bytes_per_clip": 130_000.0,
    "decode_frames_per_s_core": 300.0,
    "embed_img_per_s_cpu": 450.0,
    "embed_img_per_s_cpu_paper": 7.0,
    "embed_gflop_per_image": 8.7,
    "train_gflop_per_image": 29.0,
    "index_build_s": 0.1,
    "search_queries_per_s": 30_000.0,
    "dvc_add_files_per_s": 500.0,
    "dvc_push_files_per_s": 300.0,
    "dvc_dir_bytes_per_entry": 73.0,
    "dvc_tree_bytes_per_entry": 630.0,
    "md5_mb_per_s_core": 600.0,
}


def by_stage(units=UNITS, nodes=1, a=P.Assumptions()) -> dict[str, P.StageProjection]:
    return {s.stage: s for s in P.project(units, nodes, a)}


def test_the_fixture_names_every_unit_cost():
    assert set(UNITS) == set(P.UNIT_COSTS)


def test_a_phase_takes_its_work_at_the_slowest_rate():
    phase = P.Phase("x", 100.0, "images", {"cpu": 10.0, "network": 4.0, "gpu": 50.0})
    assert phase.bound == "network" and phase.seconds == pytest.approx(25.0)


def test_a_phase_refuses_a_rate_that_is_not_positive():
    with pytest.raises(ValueError, match="every rate > 0"):
        P.Phase("x", 1.0, "images", {"cpu": 0.0})


@pytest.mark.parametrize("nodes", NODES)
def test_every_stage_takes_its_work_at_its_slowest_resource(nodes):
    for stage in P.project(UNITS, nodes):
        assert stage.phases
        for phase in stage.phases:
            assert phase.seconds == pytest.approx(phase.work / min(phase.rates.values()))
            assert all(phase.seconds >= phase.work / rate * (1 - 1e-12) for rate in phase.rates.values())
        assert stage.seconds == pytest.approx(sum(p.seconds for p in stage.phases))
        longest = max(stage.phases, key=lambda p: p.seconds)
        assert stage.bound in ("memory", longest.bound)


def test_wall_time_never_grows_with_nodes_and_one_pod_stages_do_not_change():
    runs = [by_stage(nodes=n) for n in NODES]
    for name in runs[0]:
        times = [r[name].seconds for r in runs]
        assert all(b <= a * (1 + 1e-12) for a, b in zip(times, times[1:])), (name, times)
        if not runs[0][name].scales:
            assert len(set(times)) == 1 and {r[name].nodes for r in runs} == {1}, name


def test_the_download_scales_with_nodes_until_the_image_host_caps_it():
    a = replace(P.Assumptions(), origin_img_per_s=20_000.0)
    per_node = a.cores_per_node * UNITS["download_img_per_s_core"]  # CPU-bound on one node
    one = by_stage(nodes=1, a=a)["download"]
    assert one.bound == "CPU (JPEG decode + resize)"
    assert one.seconds == pytest.approx(P.LPR4M.images / per_node)
    assert by_stage(nodes=8, a=a)["download"].seconds == pytest.approx(one.seconds / 8)
    capped = by_stage(nodes=256, a=a)["download"]
    assert capped.bound == "image host" and capped.seconds == pytest.approx(P.LPR4M.images / 20_000)


def test_network_bound_download_uses_bits_bytes_and_kilobytes_consistently():
    a = replace(P.Assumptions(), network_gbit_per_node=1.0, network_efficiency=0.5, source_kb_per_image=500.0)
    stage = by_stage(nodes=4, a=a)["download"]
    bytes_per_s = 4 * 1e9 / 8 * 0.5  # 4 nodes of 1 Gbit/s at half efficiency
    assert stage.bound == "network"
    assert stage.seconds == pytest.approx(P.LPR4M.images * 500e3 / bytes_per_s)


def test_doubling_the_bounding_rate_halves_the_time_and_cost_is_node_hours_times_price():
    base = by_stage(nodes=8)["download"]
    faster = by_stage({**UNITS, "download_img_per_s_core": 2 * UNITS["download_img_per_s_core"]}, nodes=8)["download"]
    assert faster.seconds == pytest.approx(base.seconds / 2)
    assert base.node_hours == pytest.approx(8 * base.seconds / 3600)
    assert base.cost_usd == pytest.approx(base.node_hours * P.Assumptions().cpu_node_usd_per_hour)
    # a perfectly scaling stage costs the same on 1 node and on 64
    assert by_stage(nodes=64)["download"].cost_usd == pytest.approx(by_stage(nodes=1)["download"].cost_usd)


def test_training_uses_no_more_gpus_than_its_global_batch_fills():
    a = P.Assumptions()
    cap = a.train_batch // a.min_batch_per_gpu
    for n in NODES:
        paper = by_stage(nodes=n)["train_encoder (paper schedule)"]
        assert paper.nodes == min(n, cap)
        assert by_stage(nodes=n)["train_encoder (one epoch)"].nodes == n
    assert by_stage(nodes=64)["train_encoder (paper schedule)"].seconds == pytest.approx(
        by_stage(nodes=cap)["train_encoder (paper schedule)"].seconds)


def test_training_is_bound_by_jpeg_decoding_until_the_gpu_decodes():
    a = P.Assumptions()
    stage = by_stage(nodes=1, a=a)["train_encoder (paper schedule)"]
    images = a.train_steps * a.train_batch * (a.frames_per_clip + 1)
    decode = a.decode_cores_per_gpu_node * UNITS["decode_frames_per_s_core"]
    gpu = a.gpu_peak_tflops * 1e12 * a.gpu_mfu / (UNITS["train_gflop_per_image"] * 1e9)
    assert decode < gpu and stage.bound == "JPEG decode"
    assert stage.seconds == pytest.approx(images / decode)
    fed = replace(a, gpu_decode_frames_per_s=1e6)  # GPU decoding measured fast: the model step binds
    stage = by_stage(nodes=1, a=fed)["train_encoder (paper schedule)"]
    assert stage.bound == "GPU" and stage.seconds == pytest.approx(images / gpu)


def test_a_measured_gpu_rate_replaces_the_flops_estimate():
    a = replace(P.Assumptions(), gpu_train_img_per_s=1234.0, gpu_embed_img_per_s=4321.0)
    assert P.gpu_rates(UNITS, a) == {"train": 1234.0, "embed": 4321.0}
    est = P.gpu_rates(UNITS, P.Assumptions())
    assert est["embed"] / est["train"] == pytest.approx(UNITS["train_gflop_per_image"] / UNITS["embed_gflop_per_image"])


def test_a_stage_that_does_not_fit_a_node_is_bound_by_memory():
    stages = by_stage()
    need = P.LPR4M.check_rows * UNITS["validate_rss_bytes_per_row"] / 2**30
    assert stages["validate"].memory_gib == pytest.approx(need) and need > 128
    assert stages["validate"].bound == "memory"
    small = by_stage({**UNITS, "validate_rss_bytes_per_row": 100.0})["validate"]
    assert small.bound == "CPU" and small.seconds == stages["validate"].seconds


def test_missing_or_zero_unit_costs_are_named():
    units = {k: v for k, v in UNITS.items() if k != "parse_rows_per_s"} | {"md5_mb_per_s_core": 0.0}
    with pytest.raises(ValueError, match=r"parse_rows_per_s=None, md5_mb_per_s_core=0\.0$"):
        P.project(units, 1)
    with pytest.raises(ValueError, match="nodes must be >= 1"):
        P.project(UNITS, 0)
    with pytest.raises(ValueError, match="gpu_mfu"):
        P.Assumptions(gpu_mfu=1.5)


def test_the_dvc_threshold_separates_files_from_webdataset_shards():
    a = P.Assumptions()
    limit = P.dvc_file_threshold(UNITS, a)
    at = P.dvc_file_costs(limit, UNITS, a)
    assert at["seconds"] <= a.dvc_max_seconds * (1 + 1e-9) and at["manifest_gib"] <= a.dvc_max_manifest_gib
    over = P.dvc_file_costs(2 * limit, UNITS, a)
    assert over["seconds"] > a.dvc_max_seconds or over["manifest_gib"] > a.dvc_max_manifest_gib
    assert P.LPR4M.images > limit  # every frame as a file: beyond what DVC handles
    assert P.LPR4M.images / a.webdataset_samples_per_shard < limit  # shards: well within
    one = P.dvc_file_costs(1000, UNITS, a)
    assert one["put_usd"] == pytest.approx(0.005) and one["manifest_gib"] == pytest.approx(73e3 / 2**30)


def test_storage_price_is_bytes_times_the_monthly_rate():
    a = P.Assumptions()
    assert P.storage_usd_per_month(1_000_000, a) == pytest.approx(1e6 * 50e3 / 1e9 * 0.023)


def test_the_markdown_table_has_a_row_per_stage_and_a_column_per_node_count():
    table = P.markdown_table(UNITS, (1, 8, 64)).splitlines()
    stages = [s.stage for s in P.project(UNITS, 1)]
    assert len(table) == 2 + len(stages)
    assert table[0].endswith("| 1 node | 8 nodes | 64 nodes |")
    for line, name in zip(table[2:], stages):
        assert line.startswith(f"| {name} |") and line.count("|") == table[0].count("|")


@pytest.mark.parametrize("seconds,text", [(42, "42 s"), (600, "10 min"), (7200, "2.0 h"), (3 * 86400, "3.0 d")])
def test_durations_read_in_the_right_unit(seconds, text):
    assert P.format_seconds(seconds) == text


def test_two_sizes_cancel_the_start_up_cost():
    # 10 CPU-s of start-up, then 0.02 CPU-s per item
    assert unit_costs._marginal((100, 1100), (12.0, 32.0)) == (pytest.approx(50.0), True)
    assert unit_costs._marginal((100, 1100), (12.0, 11.0)) == (pytest.approx(100.0), False)  # noise: whole run


def test_gpu_figures_of_a_full_gpu_run_feed_the_projection(tmp_path):
    base = P.Assumptions()
    full = tmp_path / "gpu.json"
    full.write_text(json.dumps({"tiny": 0, "device": "cuda", "device_name": "NVIDIA H100", "clips_per_s": 100.0,
                                "gpu_frames_per_s": 9000.0}))
    a, source = unit_costs.gpu_assumptions(full, base)
    assert a.gpu_train_img_per_s == 1100.0 and a.gpu_decode_frames_per_s == 9000.0 and "H100" in source
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps({"tiny": 1, "device": "cpu", "clips_per_s": 3.0, "gpu_frames_per_s": float("nan")}))
    with pytest.raises(SystemExit, match="not a full GPU run"):
        unit_costs.gpu_assumptions(tiny, base)
    assert unit_costs.gpu_assumptions(None, base)[0] == base


@pytest.mark.slow
@pytest.mark.integration
def test_quick_run_measures_every_unit_cost(tmp_path):
    out = tmp_path / "unit_costs.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "benchmarks/unit_costs.py", "--quick", "--json", str(out),
                           "--work", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT ")
    result = {k: float(v) for k, v in (kv.split("=", 1) for kv in last.split()[1:])}
    assert set(P.UNIT_COSTS) <= set(result)
    assert all(result[k] > 0 and math.isfinite(result[k]) for k in P.UNIT_COSTS)
    saved = json.loads(out.read_text())
    assert saved["mode"] == "quick" and saved["machine"]["cpus"] == os.cpu_count()
    for key in P.UNIT_COSTS:
        assert saved["unit_costs"][key] == pytest.approx(result[key], rel=1e-3, abs=0.5)
        assert {"unit", "cores", "command"} <= set(saved["figures"][key])
    assert saved["figures"]["search_queries_per_s"]["top1_agrees"] == 1.0
    assert "| download |" in proc.stdout and "webdataset" in proc.stdout
    # the table can be printed again from the saved figures
    again = subprocess.run([sys.executable, "benchmarks/unit_costs.py", "--table", str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and "| train_encoder (paper schedule) |" in again.stdout
