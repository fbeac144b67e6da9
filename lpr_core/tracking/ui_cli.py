"""``lpr ui``: see :mod:`lpr_core.tracking.cli`."""

from lpr_core.tracking.cli import add_ui_arguments as add_arguments
from lpr_core.tracking.cli import run_ui as run

__all__ = ["add_arguments", "run"]
