"""Ablation of the RICE encoder on the ``demo`` synthetic world: what each part adds to test rank-1.

Builds the world once (``lpr_core.synth.generate_world(size="demo")``, its download made directly
with Pillow by ``tests.validation.world.build_download``: no HTTP, then the prepared tables), trains
the detector once with the real ``train_detector`` stage, then trains the encoder with the real
``train_encoder`` stage for each variant (the ``train_encoder`` section of ``params.yaml`` with the
variant's switches) and scores the test queries with the LPR protocol (each query ranked within
its own livestream's gallery; rank-1 / rank-5):

1. ``baseline``: one frame (the middle one at test time), full frames, ICL only;
2. ``+temporal``: T frames pooled by the clip aggregator (``model.aggregator``: attention
   pooling by default);
3. ``+crops``: frames cropped to ground-truth boxes in training, to the trained detector's boxes
   at test time (the ``GT-box R1`` column uses ground-truth test boxes instead: the detector's
   cost);
4. ``+pmd``: the pairwise matching decoder loss;
5. ``+pfr``: patch feature reconstruction: the full model, i.e. the ``params.yaml`` defaults.

Every variant trains for the same steps (``train.max_steps`` of ``params.yaml`` unless ``--steps``).
The run goes to its own MLflow store and experiment (``<work>/mlflow.db``, ``lpr-ablation``)
unless ``MLFLOW_TRACKING_URI`` is set.

With ``--seeds 0,1,2`` each variant trains once per seed (``train.seed``: initialisation,
sampling and augmentation); the table gives the mean (and the per-seed values), since 121 test
queries leave a single run's rank-1 a few points of noise.

    python benchmarks/ablation.py [--work benchmarks/out/ablation] [--variants baseline,full]
        [--seeds 0,1] [--steps N] [--set model.image_size=112 ...] [--test-boxes detector|gt] [--reuse]

Last line: ``RESULT baseline_rank1=<r> full_rank1=<r> full_train_seconds=<s>`` (means over seeds).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: name -> (what it adds, overrides of the train_encoder section)
VARIANTS: dict[str, tuple[str, dict]] = {
    "baseline": (
        "middle frame, full frames, ICL",
        {"model": {"aggregator": "middle", "num_frames": 1, "pmd": False, "pfr": False}, "data": {"crop_boxes": False}},
    ),
    "+temporal": ("aggregator over T frames", {"model": {"pmd": False, "pfr": False}, "data": {"crop_boxes": False}}),
    "+crops": ("GT crops in training, detector crops at test", {"model": {"pmd": False, "pfr": False}}),
    "+pmd": ("pairwise matching decoder", {"model": {"pfr": False}}),
    "full": ("+ patch feature reconstruction (params.yaml)", {}),
}


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children (data loader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in, recursively (copies)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def parse_sets(items: list[str]) -> dict:
    """``["model.image_size=112", "train.lr=1e-3"]`` -> a nested override (YAML values)."""
    import yaml

    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        if not value or "." not in key:
            raise SystemExit(f"--set expects part.key=value, got {item!r}")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def build_world(work: Path, params: dict, rebuild: bool) -> tuple[Path, Path, Path]:
    """The demo world, its download and prepared tables under ``work`` (reused when present)."""
    from lpr_core.config import from_mapping
    from lpr_core.data.prepare import PrepareParams, prepare
    from lpr_core.formats.parquet import write_table
    from lpr_core.synth.world import generate_world
    from tests.validation.world import build_download

    world, download, prepared = work / "world", work / "download", work / "prepared"
    if (prepared / "done.json").exists() and not rebuild:
        return world, download, prepared
    t0 = time.perf_counter()
    generate_world(world, size="demo", seed=0, progress=True)
    build_download(world, download, params["download"]["image_size"], params["download"]["resize_only_if_bigger"])
    result = prepare(world, download, from_mapping(PrepareParams, params["prepare"], where="prepare"))
    prepared.mkdir(parents=True, exist_ok=True)
    for name, table in result.tables.items():
        write_table(table, prepared / f"{name}.parquet")
    (prepared / "done.json").write_text(json.dumps(result.counts, indent=1))
    print(f"world: {result.counts} in {time.perf_counter() - t0:.0f} s")
    return world, download, prepared


def write_params(path: Path, params: dict) -> Path:
    """A full params file (every section) for one stage run."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def stage_args(prepared: Path, download: Path, out: Path, params_file: Path, reuse: bool) -> list[str]:
    """Command-line arguments of a training stage writing under ``out``."""
    return [
        "--prepared", str(prepared), "--download", str(download), "--out", str(out / "model"),
        "--plots", str(out / "plots"), "--metrics", str(out / "metrics.json"), "--params", str(params_file),
        "--resume", "auto" if reuse else "never",
    ]


def test_truth(prepared: Path) -> tuple[dict, dict]:
    """Ground truth (query -> gt images) and galleries (live -> images) of the test split."""
    import pyarrow.parquet as pq

    queries = pq.read_table(prepared / "test_queries.parquet")
    gallery = pq.read_table(prepared / "test_gallery.parquet")
    gt = dict(zip(queries.column("clip_id").to_pylist(), queries.column("gt_image_ids").to_pylist()))
    galleries: dict[str, list[str]] = {}
    for live_id, image_id in zip(gallery.column("live_id").to_pylist(), gallery.column("image_id").to_pylist()):
        galleries.setdefault(live_id, []).append(image_id)
    return gt, galleries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "ablation")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated train.seed values; each variant trains once per seed")
    parser.add_argument("--steps", type=int, default=None, help="override train.max_steps of every variant")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="override of the train_encoder section for every variant, e.g. model.image_size=112")
    parser.add_argument("--test-boxes", choices=("detector", "gt"), default="detector",
                        help="boxes of the test frames for the crop variants: the trained detector's (default) or "
                        "the ground truth (no detector is trained)")
    parser.add_argument("--detector", type=Path, default=None,
                        help="a trained detector checkpoint (detector.pt) to crop the test frames with, instead of "
                        "training one with params.yaml's train_detector section")
    parser.add_argument("--tag", default="", help="subdirectory of the variants' runs and results (for tuning sweeps)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs with the same params (resume auto)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the world")
    args = parser.parse_args(argv)

    import torch

    from lpr_core.config import load_params
    from lpr_core.data.datasets import ManifestImages, frame_boxes_lookup
    from lpr_core.evaluation.retrieval import score_clips
    from lpr_core.inputs import read_table
    from lpr_core.models.detector import load_detector, query_frame_boxes
    from lpr_core.models.encoder import load_encoder
    from lpr_core.stages import train_detector, train_encoder

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--seeds expects comma-separated integers, got {args.seeds!r}")
    if not seeds:
        parser.error("--seeds names no seed")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    os.environ.setdefault("LPR_MLFLOW_EXPERIMENT", "lpr-ablation")
    params = load_params(args.params)
    common = parse_sets(args.sets)
    if args.steps is not None:
        common = deep_merge(common, {"train": {"max_steps": args.steps}})
    for section in ("train_encoder", "train_detector"):
        params[section] = deep_merge(params[section], {"train": {"progress": False}})

    _, download, prepared = build_world(work, params, args.rebuild)
    gt, galleries = test_truth(prepared)
    test_frames = ManifestImages.from_download(download, "test", "frames")
    test_images = ManifestImages.from_download(download, "test", "images")
    gt_boxes = frame_boxes_lookup(read_table(prepared / "test_frame_boxes.parquet"), test_frames)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cores} cores, load average {os.getloadavg()[0]:.1f} at start")

    detector = None
    sections = {n: deep_merge(deep_merge(params["train_encoder"], VARIANTS[n][1]), common) for n in names}
    if args.test_boxes == "detector" and args.detector is not None:
        detector, det_config = load_detector(args.detector)
        print(f"detector: {args.detector}")
    elif args.test_boxes == "detector" and any(s["data"]["crop_boxes"] for s in sections.values()):
        out = work / "detector"
        params_file = write_params(out / "params.yaml", params)
        t0 = time.perf_counter()
        if train_detector.main(stage_args(prepared, download, out, params_file, args.reuse)) != 0:
            return 1
        det_metrics = json.loads((out / "metrics.json").read_text())
        print(f"detector: test mAP@0.5 {det_metrics['detector/map50']:.3f}, mAP {det_metrics['detector/map']:.3f} "
              f"({det_metrics['detector/train_seconds']:.0f} s training, {time.perf_counter() - t0:.0f} s in all)")
        detector, det_config = load_detector(out / "model" / "detector.pt")
    detector_boxes: dict[int, dict] = {}

    rows = []
    for name, seed in [(n, s) for n in names for s in seeds]:
        section = deep_merge(sections[name], {"train": {"seed": seed}})
        out = work / "variants" / args.tag / name.lstrip("+")
        if len(seeds) > 1:
            out = out / f"seed{seed}"
        params_file = write_params(out / "params.yaml", {**params, "train_encoder": section})
        load_before = os.getloadavg()[0]
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        print(f"\n== {name}: {VARIANTS[name][0]} (seed {seed})")
        if train_encoder.main(stage_args(prepared, download, out, params_file, args.reuse)) != 0:
            return 1
        summary = json.loads((out / "model" / "train_summary.json").read_text())
        model = load_encoder(out / "model" / "encoder.pt")
        crop, padding = section["data"]["crop_boxes"], section["data"]["box_padding"]
        boxes = None
        if crop and detector is None:
            boxes = gt_boxes
        elif crop:
            t = model.config.num_frames
            if t not in detector_boxes:
                torch.set_num_threads(cores)
                detector_boxes[t] = query_frame_boxes(
                    detector, list(gt), test_frames, num_frames=t, score_threshold=det_config.score_threshold,
                    mode=det_config.crop_mode,
                )
            boxes = detector_boxes[t]
        test = score_clips(model, gt=gt, galleries=galleries, frames=test_frames, images=test_images, boxes=boxes,
                           box_padding=padding, batch_size=32)
        oracle = score_clips(model, gt=gt, galleries=galleries, frames=test_frames, images=test_images, boxes=gt_boxes,
                             box_padding=padding, batch_size=32) if crop and detector is not None else None
        rows.append({
            "variant": name,
            "seed": seed,
            "adds": VARIANTS[name][0],
            "test_rank1": test.summary["rank1"],
            "test_rank5": test.summary["rank5"],
            "test_mAP": test.summary["mAP"],
            "test_rank1_gt_boxes": None if oracle is None else oracle.summary["rank1"],
            "val_rank1": (summary.get("val") or {}).get("metrics", {}).get("rank1"),
            "steps": summary["steps"],
            "train_seconds": summary["train_seconds"],
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(_cpu_seconds() - cpu0, 1),
            "load_avg": round((load_before + os.getloadavg()[0]) / 2, 1),
            "queries": test.summary["num_queries"],
        })
        r = rows[-1]
        print(f"   test rank-1 {r['test_rank1']:.3f}  rank-5 {r['test_rank5']:.3f}  ({r['train_seconds']:.0f} s training)")

    (work / "variants" / args.tag).mkdir(parents=True, exist_ok=True)
    (work / "variants" / args.tag / "ablation.json").write_text(
        json.dumps({"sets": args.sets, "steps": args.steps, "seeds": seeds, "rows": rows}, indent=1))
    table = summarise(rows)
    print("\n" + format_table(table, per_seed=len(seeds) > 1))
    by = {r["variant"]: r for r in table}
    result = []
    if "baseline" in by:
        result.append(f"baseline_rank1={by['baseline']['test_rank1']:.4f}")
    if "full" in by:
        result += [f"full_rank1={by['full']['test_rank1']:.4f}", f"full_train_seconds={by['full']['train_seconds']:.0f}"]
    print(f"queries: {rows[0]['queries'] if rows else 0}; seeds: {seeds}; results in {work / 'variants' / args.tag / 'ablation.json'}")
    print("RESULT " + " ".join(result))
    return 0


def summarise(rows: list[dict]) -> list[dict]:
    """One row per variant (in first-seen order): the mean of each figure over its seeds, and
    the per-seed test rank-1 values in ``test_rank1_seeds``."""
    import statistics

    out: list[dict] = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == name]
        row = {"variant": name, "adds": runs[0]["adds"], "test_rank1_seeds": [r["test_rank1"] for r in runs]}
        for key in ("test_rank1", "test_rank5", "test_mAP", "test_rank1_gt_boxes", "val_rank1", "train_seconds",
                    "cpu_seconds", "load_avg", "steps"):
            values = [r[key] for r in runs if r.get(key) is not None]
            row[key] = statistics.fmean(values) if values else None
        out.append(row)
    return out


def format_table(table: list[dict], per_seed: bool = False) -> str:
    """The Markdown table of :func:`summarise`'s rows (with a per-seed rank-1 column when
    ``per_seed``)."""
    def num(v: float | None, digits: int = 3) -> str:
        return "" if v is None else f"{v:.{digits}f}"

    head = ["variant", "adds", "test R1", "test R5", "test mAP", "GT-box R1", "val R1", "steps", "train s", "CPU s", "load"]
    if per_seed:
        head.insert(3, "R1 per seed")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in table:
        cells = [r["variant"], r["adds"], num(r["test_rank1"]), num(r["test_rank5"]), num(r["test_mAP"]),
                 num(r["test_rank1_gt_boxes"]), num(r["val_rank1"]), f"{r['steps']:.0f}", f"{r['train_seconds']:.0f}",
                 f"{r['cpu_seconds']:.0f}", num(r["load_avg"], 1)]
        if per_seed:
            cells.insert(3, " / ".join(f"{v:.3f}" for v in r["test_rank1_seeds"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
