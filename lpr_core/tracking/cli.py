"""``lpr promote``, ``lpr rollback`` and ``lpr ui``: the registry gate and the MLflow UI.

``lpr promote --candidate-from data/evaluate`` logs the evaluated encoder (+ detector) as an
MLflow model, registers it as a new version of ``lpr-encoder`` with its scores and lineage, and
runs the gate (params.yaml ``promote`` section). When the champion was scored on other test
data, it is scored again first by rerunning the ``index_gallery`` and ``evaluate`` stages with the
champion's weights, with the very command lines of ``dvc.yaml`` (each in its own process group,
stopped with ``lpr promote``). A candidate identical to the champion (same model checksum, same
data version) is not registered again: the champion records the resubmission and the command
says ``UNCHANGED``. ``lpr ui`` runs the MLflow server in its own process group: stopping ``lpr
ui`` (SIGTERM, Ctrl-C) stops the server and its workers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from lpr_core.children import child_group, run_in_group, terminate_raises, wait
from lpr_core.config import ConfigError, load_section
from lpr_core.dvcgraph import load_stages
from lpr_core.tracking import lineage
from lpr_core.tracking.gate import GateConfig

PROMOTE_SECTION = "promote"

log = logging.getLogger(__name__)


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
    return load_section(GateConfig, PROMOTE_SECTION, params)


def _stage_cmd(stage: str, overrides: dict[str, str]) -> list[str]:
    """The stage's command line from dvc.yaml with some ``--flag value`` pairs replaced."""
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
    """Score a registered version on the current test data by rerunning index_gallery + evaluate.

    The model is downloaded from the registry and its ``encoder.pt`` / ``detector.pt`` (under the
    model's ``artifacts/``, whatever the model's layout) are given to the stages.
    """
    import mlflow

    from lpr_core.tracking import registry
    from lpr_core.tracking.model import DETECTOR_FILE, ENCODER_FILE

    def rescore(version: str):
        with tempfile.TemporaryDirectory(prefix="lpr-rescore-") as tmp:
            tmp = Path(tmp)
            model_dir = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{cfg.model_name}/{version}", dst_path=str(tmp / "model")))
            enc, det = tmp / "encoder", tmp / "detector"
            enc.mkdir(), det.mkdir()
            encoder = sorted(model_dir.rglob(ENCODER_FILE))
            if not encoder:
                raise registry.RegistryError(f"v{version} of {cfg.model_name}: no {ENCODER_FILE} in the registered "
                                             f"model ({model_dir}); it cannot be rescored")
            (enc / ENCODER_FILE).symlink_to(encoder[0])
            found = sorted(model_dir.rglob(DETECTOR_FILE))
            if found:
                (det / DETECTOR_FILE).symlink_to(found[0])
            log.info("rescoring v%s of %s on the current test data", version, cfg.model_name)
            # each stage runs in its own process group, stopped with this command (SIGTERM, Ctrl-C)
            run_in_group(_stage_cmd("index_gallery", {"--encoder": str(enc), "--out": str(tmp / "index")}),
                         check=True)
            run_in_group(_stage_cmd("evaluate", {
                "--encoder": str(enc), "--detector": str(det), "--index": str(tmp / "index"),
                "--out": str(tmp / "eval"), "--plots": str(tmp / "plots"), "--metrics": str(tmp / "metrics.json"),
            }), check=True)
            cand = json.loads((tmp / "eval" / "candidate.json").read_text())
            return cand["metrics"], cand["data_version"]

    return rescore


def read_candidate(candidate_dir: Path) -> dict:
    """``candidate.json`` of the evaluate stage, with its model files resolved and checksummed.

    Adds ``encoder_dir``, ``detector_dir`` (or None) and ``model_sha256`` to the record.
    """
    from lpr_core.tracking import registry
    from lpr_core.tracking.model import DETECTOR_FILE, ENCODER_FILE, model_checksum

    path = candidate_dir / "candidate.json"
    try:
        cand = json.loads(path.read_text())
        encoder_dir = Path(cand["encoder"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise registry.RegistryError(f"{path}: cannot read the candidate ({exc}); run the evaluate stage first") from None
    encoder_dir = encoder_dir.parent if encoder_dir.suffix == ".pt" else encoder_dir
    detector = cand.get("detector")
    detector_dir = None if not detector else (Path(detector).parent if Path(detector).suffix == ".pt" else Path(detector))
    if not (encoder_dir / ENCODER_FILE).is_file():
        raise registry.RegistryError(f"{path}: the candidate's encoder {encoder_dir / ENCODER_FILE} is missing")
    cand["encoder_dir"], cand["detector_dir"] = encoder_dir, detector_dir
    cand["model_sha256"] = model_checksum(encoder_dir / ENCODER_FILE,
                                          detector_dir / DETECTOR_FILE if detector_dir is not None else None)
    return cand


def _lineage(run_id: str | None = None) -> dict[str, str | None]:
    lock = Path("dvc.lock")
    return {
        "lpr.git_commit": lineage.git_commit("."),
        "lpr.dvc_lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest()[:16] if lock.exists() else None,
        "lpr.pipeline_run_id": lineage.pipeline_run_id(),
        "lpr.register_run_id": run_id,
    }


def register_from_candidate(candidate_dir: Path, cfg, cand: dict | None = None) -> str:
    """Log and register the model described by ``candidate.json``; return the new version."""
    import mlflow

    from lpr_core.models.encoder import load_encoder
    from lpr_core.tracking import registry
    from lpr_core.tracking.model import ENCODER_FILE, log_retrieval_model
    from lpr_core.tracking.run import stage_run

    cand = cand or read_candidate(candidate_dir)
    dim = int(load_encoder(cand["encoder_dir"] / ENCODER_FILE).config.embed_dim)
    serving = {"crops": cand.get("crops"), "box_padding": cand.get("box_padding", 0.1)}
    with stage_run("register", {"promote": {"model_name": cfg.model_name}}) as run:
        model_uri = log_retrieval_model(cand["encoder_dir"], cand["detector_dir"], dim, serving=serving)
        mlflow.log_metrics({k: float(v) for k, v in cand["metrics"].items() if v is not None})
        extra = {**_lineage(run.run_id), registry.MODEL_SHA_TAG: cand["model_sha256"]}
        return registry.register_candidate(model_uri, cand["metrics"], cand.get("data_version"),
                                           bool(cand.get("validation_passed")), cfg=cfg, run_id=run.run_id,
                                           extra_tags=extra)


def _promote(args: argparse.Namespace, cfg) -> int:
    from lpr_core.tracking import registry

    version = args.version
    if version is None:
        cand = read_candidate(args.candidate_from)
        same = registry.identical_champion(cand["model_sha256"], cand.get("data_version"), cfg)
        if same is not None:
            details = {k: v for k, v in _lineage().items() if k != "lpr.register_run_id"}
            count = registry.record_resubmission(same, cfg, details=details)
            print(f"{cfg.model_name} v{same}: UNCHANGED: the candidate is identical to champion v{same} (model "
                  f"sha256 {cand['model_sha256'][:12]}, data {cand.get('data_version')}): recorded on v{same} "
                  f"(lpr.resubmitted_count = {count}), not registered again")
            return 0
        version = register_from_candidate(args.candidate_from, cfg, cand)
    decision = registry.promote(version, cfg, rescore=None if args.no_rescore else stage_rescorer(cfg))
    verdict = "PROMOTED to champion" if decision.promote else "REFUSED"
    print(f"{cfg.model_name} v{version}: {verdict}: {decision.reason}")
    for k, v in sorted(decision.evidence().items()):
        print(f"  {k} = {v}")
    return 3 if (args.fail_on_refuse and not decision.promote) else 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lpr promote``."""
    from lpr_core.tracking import registry
    from lpr_core.tracking.lock import LockError
    from lpr_core.tracking.run import configure

    try:
        cfg = load_gate(args.params)
    except ConfigError as exc:
        log.error("lpr promote: %s", exc)
        return 2
    configure(".")
    # SIGTERM (a stopped pod, a killed task) unwinds: rescoring stages stop, the lock is released
    with terminate_raises():
        try:
            return _promote(args, cfg)
        except (registry.RegistryError, LockError) as exc:
            log.error("lpr promote: %s", exc)
            return 2


def add_rollback_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lpr rollback``."""
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (promote section)")


def run_rollback(args: argparse.Namespace) -> int:
    """Entry point of ``lpr rollback``."""
    from lpr_core.tracking import registry
    from lpr_core.tracking.lock import LockError
    from lpr_core.tracking.run import configure

    try:
        cfg = load_gate(args.params)
        configure(".")
        with terminate_raises():
            old, new = registry.rollback(cfg)
    except (ConfigError, registry.RegistryError, LockError) as exc:
        log.error("lpr rollback: %s", exc)
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
    # the server and its workers run in their own process group, stopped with this command:
    # Ctrl-C or SIGTERM to `lpr ui` leaves nothing behind
    try:
        with child_group(cmd) as proc:
            return wait(proc)
    except KeyboardInterrupt:
        return 0
