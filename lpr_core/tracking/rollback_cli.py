"""``lpr rollback``: see :mod:`lpr_core.tracking.cli`."""

from lpr_core.tracking.cli import add_rollback_arguments as add_arguments
from lpr_core.tracking.cli import run_rollback as run

__all__ = ["add_arguments", "run"]
