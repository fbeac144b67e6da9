"""lpr_core: the library behind the LPR MLOps workflow.

Importing it has no side effects: no directories, no logging setup, no tracking URI.
"""

__version__ = "0.1.0"
