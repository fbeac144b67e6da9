"""Airflow DAG ``lpr_pipeline``: the stages of ``dvc.yaml`` in order, then the registry gate.

Thin on purpose: the tasks come from ``dvc.yaml`` (see ``lpr_dags/builders.py``) and run either
as ``dvc repro --single-item <stage>`` in the project checkout or as Kubernetes pods, as the
settings say (``LPR_RUNNER``, ``LPR_PROJECT_DIR``, ``LPR_AIRFLOW_CONFIG``; ``docs/kubernetes.md``).
"""

from airflow.sdk import DAG
from lpr_dags.builders import build_pipeline_dag

dag: DAG = build_pipeline_dag()
