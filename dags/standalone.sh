#!/usr/bin/env bash
# Airflow standalone on this checkout: the README's Airflow command (`make airflow` runs this).
#
# - The project's environment comes first on PATH: `airflow standalone` starts its scheduler, DAG
#   processor, triggerer and API server as `airflow ...` from PATH, and the tasks run `dvc` and `lpr`.
# - AIRFLOW_HOME is .airflow/ in the project, the DAGs are dags/, no example DAGs, DAGs unpaused
#   (they have no schedule: nothing runs until a run is triggered).
# - The one-slot pool of the tasks that move registry aliases (lpr_promote's `promote_pool`) is created.
#
# Every setting can be overridden from the environment: LPR_VENV (the environment), AIRFLOW_HOME,
# AIRFLOW__*, LPR_PROJECT_DIR, LPR_AIRFLOW_CONFIG. The UI and the REST API answer on
# http://localhost:8080 (AIRFLOW__API__PORT), user admin, password in
# $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated.
set -euo pipefail
project=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${LPR_VENV:-$project/.venv}
if [ ! -x "$venv/bin/airflow" ]; then
  echo "dags/standalone.sh: no Airflow in $venv: build the environment first (make env)" >&2
  exit 2
fi
export PATH="$venv/bin:$PATH"
export AIRFLOW_HOME=${AIRFLOW_HOME:-$project/.airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$project/dags}
export AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-False}
export LPR_PROJECT_DIR=${LPR_PROJECT_DIR:-$project}
mkdir -p "$AIRFLOW_HOME"

pool=$(python - "$AIRFLOW__CORE__DAGS_FOLDER" <<'PY'
import sys
from components.orchestration import load_settings
print(load_settings(dags_dir=sys.argv[1]).promote_pool)
PY
)
echo "dags/standalone.sh: AIRFLOW_HOME=$AIRFLOW_HOME, DAGs in $AIRFLOW__CORE__DAGS_FOLDER, project $LPR_PROJECT_DIR"
airflow db migrate
airflow pools set "$pool" 1 "LPR: tasks that move registry aliases, one at a time"
exec airflow standalone
