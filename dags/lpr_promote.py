"""Airflow DAG ``lpr_promote``: promote a model version through the registry gate, or roll back.

Trigger it by hand with ``{"action": "promote", "version": "7"}`` or ``{"action": "rollback"}``;
it runs the same ``lpr promote`` / ``lpr rollback`` commands as the command line.
"""

from airflow.sdk import DAG
from lpr_dags.builders import build_promote_dag

dag: DAG = build_promote_dag()
