"""One MLflow run per pipeline stage, with the pipeline's lineage tags.

The embedded default is a sqlite store (``mlflow.db``) and local artifacts (``mlartifacts/``) in
the project root; ``$MLFLOW_TRACKING_URI`` points every stage at a server instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from lpr_core.tracking import lineage

EXPERIMENT_ENV = "LPR_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "lpr-pipeline"


def tracking_uri(project_root: str | Path = ".") -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else the embedded sqlite store in ``project_root``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(project_root).resolve() / 'mlflow.db'}"


def artifact_root(project_root: str | Path = ".") -> str:
    """Where the embedded store keeps artifacts: ``<project_root>/mlartifacts``."""
    return (Path(project_root).resolve() / "mlartifacts").as_uri()


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested params into ``a.b.c`` keys with string values (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


def configure(project_root: str | Path = ".", experiment: str | None = None) -> str:
    """Point MLflow at the project's store and experiment; return the experiment id."""
    mlflow.set_tracking_uri(tracking_uri(project_root))
    name = experiment or os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    uri = tracking_uri(project_root)
    # a sqlite store keeps its artifacts beside the database; a server decides for itself
    location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri() if uri.startswith("sqlite:///") else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # another stage created it at the same moment
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@dataclass
class StageRun:
    """Handle on the active stage run: log metrics and artifacts without importing mlflow yourself."""

    run_id: str
    stage: str

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (``split/metric`` names), optionally at a training step."""
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or a directory as run artifacts (missing paths are skipped)."""
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        elif path.exists():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set string tags on the run."""
        mlflow.set_tags({k: str(v) for k, v in tags.items() if v is not None})


#: The trigger params of the pipeline run, set by the orchestrators in every task (components/orchestration.py).
PARAMS_OVERRIDES_ENV = "LPR_PARAMS_OVERRIDES"
DATA_URL_ENV = "LPR_DATA_URL"


def lineage_tags(stage: str, project_root: str | Path = ".") -> dict[str, str]:
    """The tags that tie a stage run to its pipeline, code and data.

    Under an orchestrator the run's trigger params are tags too: ``lpr.params_overrides`` (the JSON
    object of params overrides, ``{}`` for none) and ``lpr.data`` (the data URL, or ``data/lpr4m``
    for the data the checkout tracks).
    """
    root = Path(project_root)
    data_url = os.environ.get(DATA_URL_ENV)
    tags = {
        "lpr.stage": stage,
        "lpr.pipeline_run_id": lineage.pipeline_run_id(),
        "lpr.git_commit": lineage.git_commit(root),
        "lpr.dvc_stage_inputs": lineage.stage_input_hash(root / "dvc.lock", stage),
        "lpr.data_version": lineage.data_version(root / "dvc.lock"),
        "lpr.params_overrides": os.environ.get(PARAMS_OVERRIDES_ENV) or None,
        "lpr.data": (data_url or "data/lpr4m") if data_url is not None else None,
    }
    return {k: v for k, v in tags.items() if v is not None}


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Mapping[str, Any] | None = None,
    project_root: str | Path = ".",
    tags: Mapping[str, Any] | None = None,
) -> Iterator[StageRun]:
    """Open the MLflow run of one stage: logs its params section and lineage tags.

    The run ends FINISHED, or FAILED when the body raises (the exception propagates).
    """
    experiment_id = configure(project_root)
    all_tags = {**lineage_tags(stage, project_root), **{k: str(v) for k, v in (tags or {}).items()}}
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=all_tags) as run:
        if params:
            mlflow.log_params(flatten(params))
        yield StageRun(run_id=run.info.run_id, stage=stage)
