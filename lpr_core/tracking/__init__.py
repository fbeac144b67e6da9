"""MLflow tracking for the pipeline: one run per stage, lineage tags, the registry gate.

Nothing here touches MLflow at import time; the stage entry points call :func:`stage_run`.
"""
