# syntax=docker/dockerfile:1
# The stage image: every pipeline stage, Kubernetes pod, KFP step and TrainJob node runs in it
# (components/runtime.yaml names it). Build from the repository root:
#   docker build -f docker/train.Dockerfile -t <registry>/lpr-train:<version> .
# torch comes from requirements/lock.txt with its CUDA libraries as wheels; the base image brings
# the CUDA runtime user space, the host brings the driver (the NVIDIA device plugin exposes the GPUs).
FROM nvidia/cuda:13.0.1-runtime-ubuntu22.04

ARG DEBIAN_FRONTEND=noninteractive
ARG LPR_UID=1000
ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    GX_ANALYTICS_ENABLED=false

# Python 3.11 (the lock's interpreter) and git (DVC reads the checkout's metadata).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && groupadd --gid "${LPR_UID}" lpr \
    && useradd --uid "${LPR_UID}" --gid "${LPR_UID}" --create-home --shell /bin/bash lpr

# Dependencies first (a layer that changes only with the lock): exact pins, no resolver.
COPY requirements/lock.txt /tmp/requirements/lock.txt
COPY docker/faiss-gpu.txt /tmp/requirements/faiss-gpu.txt
RUN pip install --no-deps -r /tmp/requirements/lock.txt \
    && pip uninstall -y faiss-cpu \
    && pip install --no-deps -r /tmp/requirements/faiss-gpu.txt

# The project checkout (docker/train.Dockerfile.dockerignore keeps data, caches and environments
# out), owned by root: pods run with a read-only root file system and copy it into their working
# directory, an emptyDir (python -m components.pod does). The image holds no .git: DVC runs
# without an SCM; data comes and goes through the DVC remote.
COPY . /opt/lpr
RUN pip install --no-deps --no-build-isolation -e /opt/lpr \
    && cd /opt/lpr && dvc config --local core.no_scm true && dvc config --local core.analytics false \
    && rm -rf /opt/lpr/.dvc/tmp \
    && install -d -o "${LPR_UID}" -g "${LPR_UID}" /workspace

# components/runtime.yaml: workdir /workspace, home /home/lpr, run_as_user 1000 (all emptyDirs on a cluster).
ENV HOME=/home/lpr
WORKDIR /workspace
USER ${LPR_UID}:${LPR_UID}
CMD ["lpr", "--help"]
