"""One module per DVC stage, each run as ``python -m lpr_core.stages.<name>``.

A stage module is a thin entry point: ``add_arguments(parser)``, ``run(args) -> int`` and
``main(argv)``. It names its params section's dataclass, calls one library function and writes
its outputs; :func:`lpr_core.runner.run_stage` does the rest the same way for every stage (params
section, MLflow run, logging, one-line errors and exit statuses). No stage imports another.
``dvc.yaml`` defines each stage once; the Airflow DAGs and the Kubernetes components run the same
command.
"""
