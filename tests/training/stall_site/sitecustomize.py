"""Installs :mod:`tests.training.stall` in a process started with ``LPR_TEST_STALL_SAVE=<n>``."""

import os

if os.environ.get("LPR_TEST_STALL_SAVE", "").isdigit():
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "_lpr_stall", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "stall.py"))
    _stall = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_stall)
    _stall.install(int(os.environ["LPR_TEST_STALL_SAVE"]), os.environ.get("LPR_TEST_STALL_NOTIFY"))
