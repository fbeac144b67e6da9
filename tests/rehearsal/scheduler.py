"""The scheduler stand-in: the pods of the real ``lpr_pipeline`` DAG, in its task order.

The DAG is parsed from the image's ``dags/`` with ``LPR_RUNNER=kubernetes`` and a settings file
pointing at the rehearsal's ``runtime.yaml``; each ``KubernetesPodOperator`` is rendered for one
run (its ``run_id`` and trigger params) and its pod built with the operator's own
``build_pod_request_obj``: what it would submit to the API server. The TrainJob's node pods come
from ``components.podspec`` (``encoder_trainjob`` and ``trainjob_node_pod``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


def write_settings(work: Path, image: Path, env: Mapping[str, str], num_nodes: int = 2) -> Path:
    """The rehearsal's ``runtime.yaml`` (the image's, with the services' URLs and no GPUs) and a
    DAG settings file naming it; returns the settings file."""
    raw = yaml.safe_load((image / "components" / "runtime.yaml").read_text())
    raw["env"] = {**raw.get("env", {}), **env}
    raw["defaults"]["gpus"] = 0
    for stage in raw.get("stages", {}).values():
        stage["gpus"] = 0
    raw["trainjob"] = {**raw.get("trainjob", {}), "num_nodes": num_nodes, "gpus_per_node": 1}
    runtime = work / "runtime.yaml"
    runtime.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = work / "lpr_airflow.yaml"
    settings.write_text(yaml.safe_dump({"runner": "kubernetes", "kubernetes": {"runtime_yaml": str(runtime)}}))
    return settings


def load_dag(image: Path, settings: Path, airflow_home: Path) -> Any:
    """``lpr_pipeline`` as Airflow's DAG processor builds it from the image's DAG folder."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    os.environ.update({
        "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(image / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        "LPR_RUNNER": "kubernetes", "LPR_AIRFLOW_CONFIG": str(settings), "LPR_PROJECT_DIR": str(image),
    })
    if str(image / "dags") not in sys.path:
        sys.path.insert(0, str(image / "dags"))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(image / "dags" / "lpr_pipeline.py"))
    if bag.import_errors:
        raise RuntimeError(f"lpr_pipeline does not parse: {bag.import_errors}")
    return bag.dags["lpr_pipeline"]


def task_order(tasks: Sequence[Any]) -> list[str]:
    """The tasks' ids in dependency order (Kahn's algorithm on ``upstream_task_ids``; ties in DAG order)."""
    upstream = {t.task_id: set(t.upstream_task_ids) for t in tasks}
    order: list[str] = []
    while len(order) < len(upstream):
        ready = [t for t in upstream if t not in order and upstream[t] <= set(order)]
        if not ready:
            raise ValueError(f"the DAG has a cycle among {sorted(set(upstream) - set(order))}")
        order.append(ready[0])
    return order


def render_pods(dag: Any, run_id: str, params_overrides: Mapping[str, Any], data_url: str) -> dict[str, dict]:
    """Each task's pod for one run, as the ``KubernetesPodOperator`` would submit it, by task id."""
    import copy

    from airflow.sdk.definitions.param import ParamsDict
    from kubernetes.client import ApiClient

    pods = {}
    for task_id in task_order(dag.tasks):
        task = copy.deepcopy(dag.task_dict[task_id])  # rendering replaces the template fields
        task.render_template_fields({"run_id": run_id, "params": ParamsDict(
            {"params_overrides": dict(params_overrides), "data_url": data_url})})
        pods[task_id] = ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))
    return pods


def trainjob_pods(image: Path, settings: Path, run_id: str, params_overrides: str, data_url: str,
                  master_port: int) -> tuple[dict, list[dict]]:
    """The encoder ``TrainJob`` of a run and the node pods Kubeflow Trainer makes of it."""
    from components import podspec
    from components.orchestration import load_settings

    rt = podspec.load_runtime(load_settings(dags_dir=image / "dags").runtime_yaml())
    job = podspec.encoder_trainjob(rt, run_id=run_id, dvc_yaml=image / "dvc.yaml", params_overrides=params_overrides,
                                   data_url=data_url)
    nodes = [podspec.trainjob_node_pod(job, rank, "127.0.0.1", master_port) for rank in
             range(job["spec"]["trainer"]["numNodes"])]
    return job, nodes
