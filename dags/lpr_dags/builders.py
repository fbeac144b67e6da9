"""Build the ``lpr_pipeline`` and ``lpr_promote`` DAGs from ``dvc.yaml`` and the settings.

``lpr_pipeline`` has one task per ``dvc.yaml`` stage, named like the stage, in the stage graph's
order (:func:`lpr_core.dvcgraph.load_stages`), followed by ``promote`` (the registry gate). No
stage is listed here: add a stage to ``dvc.yaml`` and the DAG has it at the next parse. With the
``local`` runner a first task, ``configure_run``, gives the checkout the run's params and data;
pods do that themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param

from components.orchestration import TRIGGER_PARAMS, Settings, load_settings, params_keys
from lpr_dags.runners import make_runner

#: This DAG folder: its ``lpr_airflow.yaml`` is the default settings file.
DAGS_DIR = Path(__file__).resolve().parents[1]
#: Model versions as MLflow numbers them.
VERSION_PATTERN = r"^[1-9][0-9]*$"
TAGS = ["lpr", "mlops"]


def override_keys(params_yaml: Path) -> list[str]:
    """The dotted keys of ``params_yaml`` a run's ``params_overrides`` may name (empty: file unreadable)."""
    import yaml

    try:
        doc = yaml.safe_load(params_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    return sorted(params_keys(doc)) if isinstance(doc, dict) else []


def pipeline_params(params_yaml: Path | None = None) -> dict[str, Param]:
    """The manual-trigger params of ``lpr_pipeline``, validated when a run is created.

    ``params_overrides`` must be an object whose keys are dotted keys of ``params_yaml`` (a typo is
    a ``400`` at trigger time, naming the key); the values' types are checked by the run's first
    task (``lpr params apply``), which fails naming the key.
    """
    keys = override_keys(params_yaml) if params_yaml is not None else []
    schema: dict[str, Any] = {"propertyNames": {"enum": keys}} if keys else {}
    return {
        "params_overrides": Param(
            dict(TRIGGER_PARAMS["params_overrides"]), type="object", **schema,
            description='Dotted params.yaml keys and their values for this run, e.g. {"train_encoder.train.lr": '
                        "0.003}; every stage's MLflow run records them (tag lpr.params_overrides)."),
        "data_url": Param(
            TRIGGER_PARAMS["data_url"], type="string", maxLength=2048,
            description="An LPR4M folder (any fsspec URL: s3://..., gs://..., a local path) fetched into "
                        "data/lpr4m before the stages that read it; empty: the data the checkout or image "
                        "tracks (tag lpr.data)."),
    }


def promote_params() -> dict[str, Param]:
    """The params of ``lpr_promote``."""
    return {
        "action": Param("promote", type="string", enum=["promote", "rollback"],
                        description="promote: run the gate for `version`; rollback: restore the previous champion."),
        "version": Param(None, type=["null", "string"], pattern=VERSION_PATTERN,
                         description="Registered model version to promote (not used by rollback)."),
    }


def _doc(settings: Settings, what: str) -> str:
    return (f"{what}\n\nRunner: `{settings.runner}`; project: `{settings.project_dir}`; "
            f"settings: `{settings.source}`.")


def build_pipeline_dag(settings: Settings | None = None, dag_id: str = "lpr_pipeline") -> DAG:
    """``lpr_pipeline``: every ``dvc.yaml`` stage in order, then the registry gate.

    Args:
        settings: the settings (default: :func:`components.orchestration.load_settings`).
        dag_id: the DAG id.

    Returns:
        The DAG. With the ``local`` runner the DAG runs one task at a time and one run at a time
        (one checkout); with ``kubernetes`` and ``edges: dataflow`` independent stages run in
        parallel pods.
    """
    from lpr_core.dvcgraph import load_stages

    settings = settings or load_settings(dags_dir=DAGS_DIR)
    if not settings.dvc_yaml.is_file():
        raise FileNotFoundError(f"{settings.dvc_yaml}: no dvc.yaml in the project dir; set LPR_PROJECT_DIR "
                                f"(settings: {settings.source})")
    stages = load_stages(settings.dvc_yaml)
    runner = make_runner(settings, trigger_params=True)
    local = settings.runner == "local"
    if not local:
        runner.check_stages()
    with DAG(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        params=pipeline_params(settings.project_dir / "params.yaml"),
        max_active_runs=1 if local else 4,
        max_active_tasks=1 if local else 16,
        tags=TAGS,
        doc_md=_doc(settings, "The LPR pipeline: each task is one `dvc.yaml` stage (`dvc repro`), then "
                              "`promote` runs the registry gate on the candidate."),
    ) as dag:
        first = []
        if settings.setup_command:
            first.append(runner.command("setup", settings.setup_command,
                                        "Prepares the run (e.g. the synthetic world)."))
        if local:
            first.append(runner.configure_run())
        for before, after in zip(first, first[1:]):
            before >> after
        tasks = {s.name: runner.stage(s) for s in stages}
        if settings.edges == "chain":
            for before, after in zip(stages, stages[1:]):
                tasks[before.name] >> tasks[after.name]
        else:
            for s in stages:
                for up in s.upstream:
                    tasks[up] >> tasks[s.name]
        if first:
            for s in stages:
                if not s.upstream:
                    first[-1] >> tasks[s.name]
        promote = runner.command("promote", settings.promote_command,
                                 "The registry gate: registers the candidate and moves `champion` if it passes.",
                                 restore=stages[-1].name, pool=settings.promote_pool)
        if settings.edges == "chain":
            tasks[stages[-1].name] >> promote
        else:
            feeding = {u for s in stages for u in s.upstream}
            for s in stages:
                if s.name not in feeding:
                    tasks[s.name] >> promote
    return dag


def build_promote_dag(settings: Settings | None = None, dag_id: str = "lpr_promote") -> DAG:
    """``lpr_promote``: promote a given model version through the gate, or roll back the champion."""
    settings = settings or load_settings(dags_dir=DAGS_DIR)
    runner = make_runner(settings, trigger_params=False)
    command = (
        '{% if params.action == "rollback" %}' + settings.rollback_command
        + "{% elif params.version %}" + settings.promote_version_command
        + "{% else %}echo \"lpr_promote: action 'promote' needs a model version (the 'version' param)\" >&2; "
        "exit 2{% endif %}"
    )
    with DAG(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        params=promote_params(),
        max_active_runs=1,
        tags=TAGS,
        doc_md=_doc(settings, "Promote a registered model version through the registry gate, or roll the "
                              "`champion` alias back to the previous champion."),
    ) as dag:
        runner.command("registry", command, "Runs `lpr promote --version` or `lpr rollback`.",
                       pool=settings.promote_pool)
    return dag
