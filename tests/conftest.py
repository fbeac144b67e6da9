"""Session-wide test settings: nothing a test runs may write to the project's own stores."""

import os
import sys

import pytest

# A pytest-xdist worker's ``__main__`` has neither ``__spec__`` nor ``__file__``, which
# ``pyspark.sql.connect`` (imported by great-expectations) takes for a doctest run and answers with
# ``sys.exit(0)``. Stages run as ``python -m`` never meet it. A worker imports great-expectations
# once with a file name on ``__main__``, then takes the name away again (``multiprocessing``'s spawn
# would run that file in every child).
_main = sys.modules["__main__"]
if os.environ.get("PYTEST_XDIST_WORKER") and getattr(_main, "__spec__", None) is None \
        and not hasattr(_main, "__file__"):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    _main.__file__ = "pytest-xdist-worker"
    try:
        import great_expectations  # noqa: F401
    finally:
        del _main.__file__


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
def _own_state(tmp_path_factory, monkeypatch):
    """Each test gets its own resumable-state folder: a download or a checkpoint another test left
    behind must never be resumed by this one (a state key ignores runtime settings, so two tests of
    the same world and params would otherwise share it). Fixtures of a wider scope use the
    session's folder."""
    monkeypatch.setenv("LPR_STATE_URL", str(tmp_path_factory.mktemp("lpr-state")))


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
