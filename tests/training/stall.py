"""Make a process stall in the middle of its N-th checkpoint save, so a test can kill it there.

:func:`install` adds an audit hook (no change to the code under test): when the process is about
to rename the temporary file of a checkpoint save (``.last.pt.tmp-<pid>-<hex>``, written by
:func:`lpr_core.io.atomic_file`) over ``last.pt`` for the ``n``-th time, the hook cuts the temporary
file to half its length (what a kill in the middle of ``torch.save`` leaves), creates the file
``notify`` (when given: the test's cue, outside the checkpoint folder) and sleeps: the save never
completes, and the temporary file stays in place for a test to find and kill the process on.

A process started with ``LPR_TEST_STALL_SAVE=<n>`` (and ``LPR_TEST_STALL_NOTIFY=<file>``) and
``tests/training/stall_site`` on its ``PYTHONPATH`` (a ``dvc repro`` and the stage it runs)
installs the hook at start-up.
"""

from __future__ import annotations

import os
import re
import sys
import time

ENV = "LPR_TEST_STALL_SAVE"
NOTIFY_ENV = "LPR_TEST_STALL_NOTIFY"
SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stall_site")
TEMP = re.compile(r"^\.last\.pt\.tmp-\d+-[0-9a-f]+$")


def install(n: int, notify: str | None = None, seconds: float = 3600.0) -> None:
    """Stall the ``n``-th checkpoint save of this process (1 = the first); then create ``notify``."""
    seen = [0]

    def hook(event: str, args: tuple) -> None:
        if event != "os.rename" or not TEMP.match(os.path.basename(os.fspath(args[0]))):
            return
        seen[0] += 1
        if seen[0] == n:
            src = os.fspath(args[0])
            os.truncate(src, os.path.getsize(src) // 2)
            if notify:
                with open(notify, "w") as fh:
                    fh.write(src)
            time.sleep(seconds)

    sys.addaudithook(hook)
