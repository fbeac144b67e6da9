"""Helpers of the LPR Airflow DAGs: task factories and the DAG builders (settings: ``components.orchestration``).

The DAG files next to this package (``lpr_pipeline.py``, ``lpr_promote.py``) are one call each;
everything here is cheap to import (no torch, mlflow or dvc), so the DAG processor parses fast.
"""
