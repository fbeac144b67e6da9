"""One module per DVC stage, each run as ``python -m lpr_core.stages.<name>``.

A stage module holds a thin entry point: ``add_arguments(parser)``, ``run(args) -> int`` and
``main(argv)``; it reads its own section of ``params.yaml`` and calls the library. ``dvc.yaml``
defines each stage once; the Airflow DAGs and the Kubernetes components run the same command.
"""
