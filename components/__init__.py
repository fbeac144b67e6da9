"""The orchestration side of the pipeline: what runs stages as pods, and what runs inside them.

- :mod:`components.orchestration`: settings and trigger params shared by the Airflow DAGs and the
  KFP compiler;
- :mod:`components.podspec`: every pod, TrainJob and KFP step rendered from ``runtime.yaml`` (one
  container template, so they cannot drift apart);
- :mod:`components.pod`: the command every container runs (``python -m components.pod``);
- :mod:`components.exchange`: the ``dvc.lock`` entries pods hand each other through the object store;
- :mod:`components.kfp_pipeline`: the Kubeflow pipeline (``components/pipeline.yaml``);
- :mod:`components.pss`, :mod:`components.crd`: the Pod Security Standard and the vendored CRDs as checks.
"""
