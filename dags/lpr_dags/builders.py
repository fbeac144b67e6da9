"""Build the ``lpr_pipeline`` and ``lpr_promote`` DAGs from ``dvc.yaml`` and the settings.

``lpr_pipeline`` has one task per ``dvc.yaml`` stage, named like the stage, in the stage graph's
order (:func:`lpr_core.dvcgraph.load_stages`), followed by ``promote`` (the registry gate). No
stage is listed here: add a stage to ``dvc.yaml`` and the DAG has it at the next parse.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from lpr_dags.runners import make_runner, params_env
from lpr_dags.settings import Settings, load_settings

#: Sizes of the synthetic LPR4M world (``lpr synth --size``); a test keeps them equal to lpr_core's.
WORLD_SIZES = ("tiny", "small", "demo")
#: A project-relative path: segments of letters, digits, ``_ . -``, none starting with a dot
#: (so no ``..``, no absolute path, no hidden directory).
DATA_PREFIX_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"
#: Model versions as MLflow numbers them.
VERSION_PATTERN = r"^[1-9][0-9]*$"
TAGS = ["lpr", "mlops"]


def pipeline_params() -> dict[str, Param]:
    """The manual-trigger params of ``lpr_pipeline``, validated when a run is created."""
    return {
        "world_size": Param("tiny", type="string", enum=list(WORLD_SIZES),
                            description="Size of the synthetic LPR4M world (demo/CI scale)."),
        "seed": Param(0, type="integer", minimum=0, description="Seed of the world and of the run."),
        "data_prefix": Param("data", type="string", pattern=DATA_PREFIX_PATTERN, maxLength=200,
                             description="Project-relative directory of the pipeline's data."),
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
        settings: the settings (default: :func:`load_settings`).
        dag_id: the DAG id.

    Returns:
        The DAG. With the ``local`` runner the DAG runs one task at a time and one run at a time
        (one checkout); with ``kubernetes`` and ``edges: dataflow`` independent stages run in
        parallel pods.
    """
    from lpr_core.dvcgraph import load_stages

    settings = settings or load_settings()
    if not settings.dvc_yaml.is_file():
        raise FileNotFoundError(f"{settings.dvc_yaml}: no dvc.yaml in the project dir; set LPR_PROJECT_DIR "
                                f"(settings: {settings.source})")
    stages = load_stages(settings.dvc_yaml)
    params = pipeline_params()
    runner = make_runner(settings, params_env(tuple(params)))
    local = settings.runner == "local"
    if not local:
        runner.check_stages()
    with DAG(
        dag_id=dag_id,
        schedule=None,
        catchup=False,
        params=params,
        max_active_runs=1 if local else 4,
        max_active_tasks=1 if local else 16,
        tags=TAGS,
        doc_md=_doc(settings, "The LPR pipeline: each task is one `dvc.yaml` stage (`dvc repro`), then "
                              "`promote` runs the registry gate on the candidate."),
    ) as dag:
        setup = (runner.command("setup", settings.setup_command, "Prepares the run (e.g. the synthetic world).")
                 if settings.setup_command else None)
        tasks = {s.name: runner.stage(s) for s in stages}
        if settings.edges == "chain":
            for before, after in zip(stages, stages[1:]):
                tasks[before.name] >> tasks[after.name]
        else:
            for s in stages:
                for up in s.upstream:
                    tasks[up] >> tasks[s.name]
        if setup is not None:
            for s in stages:
                if not s.upstream:
                    setup >> tasks[s.name]
        promote = runner.command("promote", settings.promote_command,
                                 "The registry gate: registers the candidate and moves `champion` if it passes.",
                                 restore=stages[-1].name)
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
    settings = settings or load_settings()
    runner = make_runner(settings, params_env(("action", "version")))
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
        runner.command("registry", command, "Runs `lpr promote --version` or `lpr rollback`.")
    return dag
