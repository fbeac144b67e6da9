"""``lpr promote``, ``lpr rollback`` and ``lpr ui``: the registry gate and the MLflow UI.

``lpr promote --candidate-from data/evaluate`` logs the evaluated encoder (+ detector) as an
MLflow model, registers it as a new version of ``lpr-encoder`` with its scores and lineage, and
runs the gate (params.yaml ``promote`` section). When the champion was scored on other test
data, it is scored again first by rerunning the ``index_gallery`` and ``evaluate`` stages with the
champion's weights, with the very command lines of ``dvc.yaml``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

PROMOTE_SECTION = "promote"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lpr promote``."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--candidate-from", type=Path, help="evaluate stage output holding candidate.json")
    src.add_argument("--version", help="an already registered version to put through the gate")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (promote section)")
    parser.add_argument("--no-rescore", action="store_true",
                        help="refuse instead of rescoring a champion scored on other data")
    parser.add_argument("--fail-on-refuse", action="store_true", help="exit 3 when the gate refuses")


def load_gate(params: Path):
    """The gate configuration from the ``promote`` section."""
    from lpr_core.config import load_section
    from lpr_core.tracking.gate import GateConfig

    return load_section(GateConfig, PROMOTE_SECTION, params)


def _stage_cmd(stage: str, overrides: dict[str, str]) -> list[str]:
    """The stage's command line from dvc.yaml with some ``--flag value`` pairs replaced."""
    from lpr_core.dvcgraph import load_stages

    cmd = next(s.cmd for s in load_stages("dvc.yaml") if s.name == stage)
    argv = shlex.split(cmd)
    for flag, value in overrides.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    if argv[0] == "python":
        argv[0] = sys.executable
    return argv


def stage_rescorer(cfg):
    """Score a registered version on the current test data by rerunning index_gallery + evaluate."""
    import mlflow

    def rescore(version: str):
        with tempfile.TemporaryDirectory(prefix="lpr-rescore-") as tmp:
            tmp = Path(tmp)
            model_dir = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{cfg.model_name}/{version}", dst_path=str(tmp / "model")))
            arts = model_dir / "artifacts"
            enc, det = tmp / "encoder", tmp / "detector"
            enc.mkdir(), det.mkdir()
            (enc / "encoder.pt").symlink_to(next(arts.rglob("encoder.pt")))
            found = list(arts.rglob("detector.pt"))
            if found:
                (det / "detector.pt").symlink_to(found[0])
            print(f"rescoring v{version} of {cfg.model_name} on the current test data")
            subprocess.run(_stage_cmd("index_gallery", {"--encoder": str(enc), "--out": str(tmp / "index")}),
                           check=True)
            subprocess.run(_stage_cmd("evaluate", {
                "--encoder": str(enc), "--detector": str(det), "--index": str(tmp / "index"),
                "--out": str(tmp / "eval"), "--plots": str(tmp / "plots"), "--metrics": str(tmp / "metrics.json"),
            }), check=True)
            cand = json.loads((tmp / "eval" / "candidate.json").read_text())
            return cand["metrics"], cand["data_version"]

    return rescore


def register_from_candidate(candidate_dir: Path, cfg) -> str:
    """Log and register the model described by ``candidate.json``; return the new version."""
    import mlflow

    from lpr_core.tracking import lineage, registry
    from lpr_core.tracking.model import log_retrieval_model
    from lpr_core.tracking.run import stage_run

    path = candidate_dir / "candidate.json"
    try:
        cand = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise registry.RegistryError(f"{path}: cannot read the candidate ({exc}); run the evaluate stage first") from None
    encoder_dir = Path(cand["encoder"])
    encoder_dir = encoder_dir.parent if encoder_dir.suffix == ".pt" else encoder_dir
    detector = cand.get("detector")
    detector_dir = None if not detector else (Path(detector).parent if Path(detector).suffix == ".pt" else Path(detector))
    from lpr_core.models.encoder import load_encoder

    dim = int(load_encoder(encoder_dir / "encoder.pt").config.embed_dim)
    with stage_run("register", {"promote": {"model_name": cfg.model_name}}) as run:
        model_uri = log_retrieval_model(encoder_dir, detector_dir, dim)
        mlflow.log_metrics({k: float(v) for k, v in cand["metrics"].items()})
        lock = Path("dvc.lock")
        extra = {
            "lpr.git_commit": lineage.git_commit("."),
            "lpr.dvc_lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.exists() else None,
            "lpr.pipeline_run_id": lineage.pipeline_run_id(),
            "lpr.register_run_id": run.run_id,
        }
        return registry.register_candidate(model_uri, cand["metrics"], cand.get("data_version"),
                                           bool(cand.get("validation_passed")), cfg=cfg, run_id=run.run_id,
                                           extra_tags=extra)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lpr promote``."""
    from lpr_core.config import ConfigError
    from lpr_core.tracking import registry
    from lpr_core.tracking.run import configure

    try:
        cfg = load_gate(args.params)
    except ConfigError as exc:
        print(f"lpr promote: {exc}", file=sys.stderr)
        return 2
    configure(".")
    try:
        version = args.version or register_from_candidate(args.candidate_from, cfg)
        decision = registry.promote(version, cfg, rescore=None if args.no_rescore else stage_rescorer(cfg))
    except registry.RegistryError as exc:
        print(f"lpr promote: {exc}", file=sys.stderr)
        return 2
    verdict = "PROMOTED to champion" if decision.promote else "REFUSED"
    print(f"{cfg.model_name} v{version}: {verdict}: {decision.reason}")
    for k, v in sorted(decision.evidence().items()):
        print(f"  {k} = {v}")
    return 3 if (args.fail_on_refuse and not decision.promote) else 0


def add_rollback_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lpr rollback``."""
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (promote section)")


def run_rollback(args: argparse.Namespace) -> int:
    """Entry point of ``lpr rollback``."""
    from lpr_core.config import ConfigError
    from lpr_core.tracking import registry
    from lpr_core.tracking.run import configure

    try:
        cfg = load_gate(args.params)
        configure(".")
        old, new = registry.rollback(cfg)
    except (ConfigError, registry.RegistryError) as exc:
        print(f"lpr rollback: {exc}", file=sys.stderr)
        return 2
    print(f"{cfg.model_name}: champion moved back from v{old} to v{new}")
    return 0


def add_ui_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lpr ui``."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    parser.add_argument("--port", type=int, default=5000)


def run_ui(args: argparse.Namespace) -> int:
    """Entry point of ``lpr ui``: the MLflow UI on the project's store."""
    from lpr_core.tracking.run import tracking_uri

    uri = tracking_uri(".")
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C stops it")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
