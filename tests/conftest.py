"""Session-wide test settings: nothing a test runs may write to the project's own stores."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_tracking(tmp_path_factory):
    """Every MLflow run of the test session (in-process or in a stage subprocess) goes to a
    temporary sqlite store, never to the project's ``mlflow.db``; the stages' resumable state
    (``LPR_STATE_URL``, :mod:`lpr_core.state`) to a temporary folder, never to ``.lpr/state``."""
    store = tmp_path_factory.mktemp("mlflow")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "GX_ANALYTICS_ENABLED", "NO_ALBUMENTATIONS_UPDATE",
                                            "LPR_STATE_URL")}
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    os.environ["LPR_STATE_URL"] = str(tmp_path_factory.mktemp("lpr-state"))
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _restores_sigint(request):
    """A test must leave the SIGINT handler as it found it: an ignored SIGINT is inherited by every
    process a later test starts (which then cannot be stopped with Ctrl-C). A leak is put right and
    reported as a warning naming the test."""
    import signal
    import threading
    import warnings

    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        warnings.warn(f"{request.node.nodeid} left the SIGINT handler as {after!r} (restored)", stacklevel=1)
