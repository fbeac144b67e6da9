"""``lpr demo``: the whole workflow on the synthetic world, in one command.

Steps: generate the world (once; deterministic for a seed), serve its images on loopback with a
little fault injection, run every stage of ``dvc.yaml`` in order through ``dvc repro`` (cached
stages are skipped in seconds), stop the server and print a summary.

``dvc repro`` is the runner here because it shows the product best for a single machine: each
stage is a versioned, cached step, and a second run is instant. The same stages run under Airflow
through the ``lpr_pipeline`` DAG (see the README).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from lpr_core.children import child_group, communicate, lines, terminate_raises, wait
from lpr_core.dvcgraph import load_stages
from lpr_core.synth import ImageServer, generate_world, set_url_prefix

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
WORLD_DIR = Path("data/lpr4m")


@dataclass
class StageResult:
    """What happened to one stage in this demo run."""

    name: str
    seconds: float
    status: str  # "ran", "cached", "failed"
    returncode: int = 0


@dataclass
class DemoReport:
    """Per-stage results and the pipeline run id."""

    pipeline_run_id: str
    stages: list[StageResult] = field(default_factory=list)
    promotion: str | None = None


class DemoError(RuntimeError):
    """An expected failure of the demo, explained in one paragraph (no traceback)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lpr demo``."""
    parser.add_argument("--size", default="demo", help="synthetic world size (tiny, small, demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic world")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="loopback port of the image server")
    parser.add_argument("--fault-rate", type=float, default=0.02, help="share of image requests that fail")
    parser.add_argument("--fresh", action="store_true", help="start over: new world, every stage rerun")
    parser.add_argument("--root", type=Path, default=Path("."), help="project root (where dvc.yaml is)")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def prepare_world(root: Path, size: str, seed: int, fresh: bool) -> Path:
    """Generate the synthetic world under ``root/data/lpr4m`` unless the same one is already there."""
    world = root / WORLD_DIR
    meta = _read_json(world / "_source" / "world.json") or {}
    if not fresh and meta.get("size") == size and meta.get("seed") == seed:
        print(f"world: reusing {world} ({size}, seed {seed})")
        return world
    print(f"world: generating a '{size}' synthetic LPR4M world in {world} (seed {seed})")
    summary = generate_world(world, size=size, seed=seed, url_prefix=f"http://127.0.0.1:{DEFAULT_PORT}/lpr4m/",
                             progress=True)
    print(f"world: {summary.counts} in {summary.seconds:.1f} s")
    return world


def point_world_at(root: Path, world: Path, prefix: str) -> None:
    """Re-point the world's URL files at the server; a different prefix invalidates the download."""
    first = next(iter(sorted(world.glob("test_image_url_*.txt"))), None)
    current = first.read_text().split("\n", 1)[0] if first else ""
    if current and not current.startswith(prefix):
        stale = root / "data" / "download"
        if stale.exists():
            print(f"the image server moved to {prefix}: the previous download is discarded")
            shutil.rmtree(stale)
    set_url_prefix(world, prefix)


def stage_env(pipeline_run_id: str | None) -> dict[str, str]:
    """The environment the stages run in: this interpreter's scripts first on ``PATH`` (``dvc.yaml``
    runs ``python``), the pipeline run id (left unset for ``None``: the stages then derive one from
    the ``dvc`` process) and no analytics or update checks."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("LPR_PIPELINE_RUN_ID", None)
    if pipeline_run_id is not None:
        env["LPR_PIPELINE_RUN_ID"] = pipeline_run_id
    env.update(GX_ANALYTICS_ENABLED="false", NO_ALBUMENTATIONS_UPDATE="1")
    return env


def run_stage(root: Path, name: str, force: bool, env: dict[str, str]) -> StageResult:
    """Run one stage with ``dvc repro --single-item``; report whether it ran or was cached."""
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", name]
    if force:
        cmd.append("--force")
    t0 = time.perf_counter()
    cached = False
    # `dvc repro` and the stage it runs are a process group that ends with the demo (SIGTERM, Ctrl-C)
    with child_group(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in lines(proc):
            if "didn't change, skipping" in line or "Restored stage" in line:
                cached = True
            sys.stdout.write(f"  [{name}] {line}" if line.strip() else line)
            sys.stdout.flush()
        code = wait(proc)
    seconds = time.perf_counter() - t0
    status = "failed" if code else ("cached" if cached else "ran")
    return StageResult(name, seconds, status, code)


def run_pipeline(root: Path, force: bool, env: dict[str, str], report: DemoReport) -> None:
    """Every stage of ``dvc.yaml`` in order; stops at the first failure."""
    stages = load_stages(root / "dvc.yaml")
    for i, stage in enumerate(stages, 1):
        print(f"\n== stage {i}/{len(stages)}: {stage.name}")
        result = run_stage(root, stage.name, force, env)
        report.stages.append(result)
        print(f"== {stage.name}: {result.status} in {result.seconds:.1f} s")
        if result.returncode:
            raise DemoError(
                f"Stage '{stage.name}' failed (exit code {result.returncode}). Its own message is printed "
                f"above. Fix the cause and run `lpr demo` again: finished stages are cached and will not "
                f"run twice. To start over, run `lpr demo --fresh`.",
                code=result.returncode,
            )


def run_promotion(root: Path, env: dict[str, str], report: DemoReport) -> None:
    """Register the evaluated model and run the registry gate (``lpr promote``)."""
    candidate = root / "data/evaluate/candidate.json"
    digest = hashlib.sha256(candidate.read_bytes()).hexdigest()
    seen_file = root / ".lpr" / "registered.json"
    seen = _read_json(seen_file) or {}
    if digest in seen:
        report.promotion = f"unchanged candidate, already gated: {seen[digest]}"
        print(f"\n== promote: skipped, this candidate was already gated ({seen[digest]})")
        return
    print("\n== promote: register the evaluated model and run the gate")
    t0 = time.perf_counter()
    with child_group([sys.executable, "-m", "lpr_core.cli", "promote", "--candidate-from", "data/evaluate"],
                     cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        out, err = communicate(child)
    proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    report.promotion = next((ln for ln in proc.stdout.splitlines()
                             if "PROMOTED" in ln or "REFUSED" in ln or "UNCHANGED" in ln),
                            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no decision")
    report.stages.append(StageResult("promote", time.perf_counter() - t0, "failed" if proc.returncode else "ran",
                                     proc.returncode))
    if not proc.returncode:
        seen[digest] = report.promotion.strip()
        seen_file.parent.mkdir(exist_ok=True)
        seen_file.write_text(json.dumps(seen, indent=1))
    if proc.returncode:
        raise DemoError(f"The promotion step failed (exit code {proc.returncode}); its message is above.",
                        code=proc.returncode)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def detector_line(metrics: dict) -> str:
    """The detector's figures from ``train_detector.json`` in words: test mAP, how often its crop
    box is right, and mAP on held-out training frames (absent figures are left out)."""
    parts = []
    if "detector/map50" in metrics:
        parts.append(f"test mAP@0.5 {metrics['detector/map50']:.3f}"
                     + (f", mAP {metrics['detector/map']:.3f}" if "detector/map" in metrics else ""))
    if "detector/top_box_iou50" in metrics:
        parts.append(f"crop box right (IoU >= 0.5) on {metrics['detector/top_box_iou50']:.0%} of test frames")
    if "detector/val_map50" in metrics:
        parts.append(f"held-out training frames mAP@0.5 {metrics['detector/val_map50']:.3f}")
    return "; ".join(parts) or "no figures"


def summary_lines(root: Path, report: DemoReport) -> list[str]:
    """The closing summary: stage times, data counts, gates, metrics, where to look next."""
    lines = ["", "=" * 72, f"LPR demo summary (pipeline run {report.pipeline_run_id})", "-" * 72]
    total = sum(s.seconds for s in report.stages)
    for s in report.stages:
        lines.append(f"  {s.name:<16} {s.status:<7} {s.seconds:7.1f} s")
    lines.append(f"  {'total':<16} {'':<7} {total:7.1f} s")
    if report.stages and all(s.status == "cached" for s in report.stages):
        lines.append("  (every stage was cached: nothing changed since the last run; `lpr demo --fresh` reruns all)")
    dl = _read_json(root / "data/download/download_summary.json")
    if dl:
        lines.append("data:")
        for name, d in (dl.get("lists") or {}).items():
            if isinstance(d, dict) and "total" in d:
                lines.append(
                    f"  {name:<18} {d['total']:>6} urls, {d['success']:>6} ok, "
                    f"{d.get('recovered_by_retry', 0):>4} recovered by retry, {d['failed']:>4} failed"
                )
    val = _read_json(root / "data/validate/validation_summary.json")
    if val:
        lines.append(f"validation: {'PASSED' if val.get('success') else 'FAILED'}")
    det = _read_json(root / "data/metrics/train_detector.json") or {}
    if det:
        lines.append("detector: " + detector_line(det))
    ev = _read_json(root / "data/metrics/evaluate.json") or {}
    if ev:
        parts = []
        for k in (1, 5, 10):
            v = ev.get(f"test/rank{k}")
            lo, hi = ev.get(f"test/rank{k}_ci_low"), ev.get(f"test/rank{k}_ci_high")
            if v is not None:
                parts.append(f"rank-{k} {v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""))
        lines.append("retrieval (95% CI over livestreams): " + ", ".join(parts))
    if report.promotion:
        lines.append(f"promotion: {report.promotion.strip()}")
    lines += [
        "next:",
        "  lpr ui                      # MLflow UI on the embedded store (runs of every stage)",
        "  dvc metrics show            # the metrics of the last pipeline run",
        "  data/validate/data_docs/index.html   # great-expectations Data Docs",
        "  data/evaluate/report.html            # evaluation report with retrieval examples",
        "=" * 72,
    ]
    return lines


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lpr demo``."""
    root = args.root.resolve()
    if not (root / "dvc.yaml").exists():
        log.error("lpr demo: no dvc.yaml in %s; run it from the project root (or pass --root).", root)
        return 2
    report = DemoReport(pipeline_run_id=f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    # the stages' `python` must be this environment's, whether or not it is activated
    env = stage_env(report.pipeline_run_id)
    # SIGTERM unwinds like Ctrl-C: the running stage's process group is stopped, the image server
    # closed (see lpr_core.children)
    with terminate_raises():
        return _run(args, root, report, env)


def _run(args: argparse.Namespace, root: Path, report: DemoReport, env: dict[str, str]) -> int:
    try:
        world = prepare_world(root, args.size, args.seed, args.fresh)
        port = args.port
        if not _port_free(port):
            if args.port != DEFAULT_PORT:
                raise DemoError(f"Port {port} on 127.0.0.1 is in use. Pick another with --port N.", code=2)
            port = 0
            print(f"port {DEFAULT_PORT} is in use: serving on a free port (the download stage will rerun)")
        with ImageServer(world, host="127.0.0.1", port=port, fault_rate=args.fault_rate, seed=args.seed) as server:
            point_world_at(root, world, server.url_prefix)
            print(f"serving the world's images at {server.url_prefix} (fault rate {args.fault_rate:.0%})")
            run_pipeline(root, args.fresh, env, report)
        if (root / "data/evaluate/candidate.json").exists():
            run_promotion(root, env, report)
    except DemoError as exc:
        print("\n".join(summary_lines(root, report)))
        log.error("\nlpr demo: %s", exc)
        return exc.code
    except OSError as exc:
        log.error("\nlpr demo: %s (%s). Check free disk space and permissions.", exc.strerror or exc, exc.filename or "")
        return 1
    print("\n".join(summary_lines(root, report)))
    return 0
