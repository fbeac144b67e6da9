# The two commands of the README: `make demo` (the whole pipeline on the synthetic world) and
# `make test` (the test suite). Both build the environment from requirements/lock.txt first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lock-stamp
PYTEST_ARGS ?=

KFP_VENV := .venv-kfp

.PHONY: env kfp-env kfp demo airflow rehearsal test test-slow test-fast lint lock clean-env

$(STAMP): requirements/lock.txt pyproject.toml
	@echo ">> building $(VENV) from requirements/lock.txt (first time: ~5 minutes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

env: $(STAMP)

# The KFP compiler lives in its own small environment: kfp 2.x pins kubernetes<31 and protobuf<7,
# which clash with Airflow's Kubernetes provider.
$(KFP_VENV)/.lock-stamp: requirements/kfp-lock.txt
	$(PYTHON) -m venv $(KFP_VENV)
	$(KFP_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/kfp-lock.txt
	@touch $@

kfp-env: $(KFP_VENV)/.lock-stamp

# Compile the Kubeflow pipeline from dvc.yaml + components/runtime.yaml.
kfp: kfp-env
	PYTHONPATH=. $(KFP_VENV)/bin/python -m components.kfp_pipeline --out components/pipeline.yaml

demo: env
	$(BIN)/lpr demo $(DEMO_ARGS)

# Airflow standalone on this checkout (dags/standalone.sh): the environment first on PATH (Airflow's
# components and the tasks call `airflow`, `dvc`, `lpr`), AIRFLOW_HOME=.airflow, the promotion pool.
airflow: env
	dags/standalone.sh

# The cluster rehearsal (docs/kubernetes.md, "The rehearsal"): every pod of lpr_pipeline and the
# encoder TrainJob on loopback services (S3, MLflow on PostgreSQL); its last line is RESULT ...
rehearsal: env
	$(BIN)/python -m tests.rehearsal

# The test suite: everything but `slow` and `gpu` tests, on TEST_WORKERS processes (pytest-xdist;
# a module's tests stay on one worker, so its built worlds and servers are built once).
TEST_WORKERS ?= 2
test: env kfp-env
	$(BIN)/python -m pytest -m "not gpu and not slow" -n $(TEST_WORKERS) --dist loadscope --timeout 300 $(PYTEST_ARGS)

# The slow tests: the real dvc.yaml end to end, the DAG on real stages, Airflow's server, kills
# and resumes, Spark (about 20 minutes on 2 cores; CI runs them after `make test`).
test-slow: env kfp-env
	$(BIN)/python -m pytest -m "slow and not gpu" $(PYTEST_ARGS)

test-fast: env
	$(BIN)/python -m pytest -m "not gpu and not slow and not integration" $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check .

# Re-resolve the lock from requirements/main.in (minutes; needs the package registry).
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -U pip setuptools wheel
	.venv-lock/bin/pip install -r requirements/main.in
	.venv-lock/bin/pip freeze --all --exclude-editable | grep -vE '^(pip|lpr-mlops)==' > requirements/lock.txt
	rm -rf .venv-lock

clean-env:
	rm -rf $(VENV)
