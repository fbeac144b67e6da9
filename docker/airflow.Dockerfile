# syntax=docker/dockerfile:1
# The Airflow image: Airflow with the Kubernetes provider, the LPR DAGs and the small part of the
# project they import at parse time (lpr_core's stage graph, components/ pod templates, dvc.yaml).
# Stages never run here: with LPR_RUNNER=kubernetes every task is a pod of the stage image.
#   docker build -f docker/airflow.Dockerfile -t <registry>/lpr-airflow:<version> .
FROM apache/airflow:3.3.2-python3.11

# The versions of requirements/lock.txt, which also constrains everything the provider pulls in;
# apache-airflow is named so pip never changes the image's Airflow.
ARG AIRFLOW_VERSION=3.3.2
ARG CNCF_KUBERNETES_VERSION=10.25.0
COPY requirements/lock.txt /tmp/requirements/lock.txt
RUN pip install --no-cache-dir -c /tmp/requirements/lock.txt "apache-airflow==${AIRFLOW_VERSION}" \
    "apache-airflow-providers-cncf-kubernetes==${CNCF_KUBERNETES_VERSION}"

# The project (no dependencies: the DAGs import only yaml from it at parse time) and the DAGs.
COPY --chown=airflow:0 pyproject.toml README.md dvc.yaml params.yaml /opt/lpr/
COPY --chown=airflow:0 lpr_core /opt/lpr/lpr_core
COPY --chown=airflow:0 components /opt/lpr/components
COPY --chown=airflow:0 dags /opt/airflow/dags
RUN pip install --no-cache-dir --no-deps /opt/lpr

ENV LPR_PROJECT_DIR=/opt/lpr \
    LPR_RUNNER=kubernetes \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
USER airflow
