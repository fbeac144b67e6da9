"""Session-wide test settings: nothing a test runs may write to the project's own stores."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_tracking(tmp_path_factory):
    """Every MLflow run of the test session (in-process or in a stage subprocess) goes to a
    temporary sqlite store, never to the project's ``mlflow.db``."""
    store = tmp_path_factory.mktemp("mlflow")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "GX_ANALYTICS_ENABLED", "NO_ALBUMENTATIONS_UPDATE")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
