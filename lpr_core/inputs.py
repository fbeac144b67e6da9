"""Reading a stage's inputs, with errors that name the file and say which stage makes it.

Every stage reads the tables of the stages before it through :func:`read_table`: a missing file,
an unreadable one or a missing column is one :class:`StageInputError` naming the path (and the
stage to run), never a pyarrow traceback. :func:`file_sha256` is the identity of an input file
(the encoder and detector checkpoints recorded beside a stage's results).

Example::

    clips = read_table(prepared / "train_clips.parquet", ["clip_id", "image_id"])
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["StageInputError", "read_table", "file_sha256"]


class StageInputError(ValueError):
    """A stage input (prepared table, index directory, checkpoint) is missing or malformed."""


def read_table(path: str | os.PathLike[str], columns: Sequence[str] = (), *, made_by: str = "prepare") -> pa.Table:
    """The Parquet table at ``path``, checked to hold ``columns``.

    Args:
        path: the ``.parquet`` file.
        columns: columns the caller needs (others may be present).
        made_by: the stage that writes the file (named in the error when it is missing).

    Raises:
        StageInputError: the file is missing, unreadable, or lacks one of ``columns``.
    """
    path = Path(path)
    if not path.is_file():
        raise StageInputError(f"{path}: missing (run the {made_by} stage)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StageInputError(f"{path}: unreadable Parquet ({exc})") from None
    absent = [c for c in columns if c not in table.column_names]
    if absent:
        raise StageInputError(f"{path}: missing column(s) {absent} (has {table.column_names})")
    return table


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
