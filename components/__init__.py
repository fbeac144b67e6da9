"""Container specs of the pipeline stages: one template renders every pod, job and component.

Airflow's KubernetesPodOperator, the Kubeflow Trainer TrainJob and the KFP components all take
their container from :func:`components.podspec.stage_container`, so they cannot drift apart.
"""
