"""What a reader tells besides its table: the strict-mode error, rejected rows and the read report.

Every LPR4M reader runs in one of two modes:

- **strict**: the first bad row raises :class:`FormatError`, naming the file and the line;
- **lenient** (the pipeline default): a bad row is skipped and recorded as a :class:`Reject`
  (file, line, reason, raw text); the reader returns its table and a :class:`ReadReport`.

A problem with a whole file (a JSON file that does not parse, a file that does not exist) raises
:class:`FormatError` in both modes: there is no row to skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa

from lpr_core.formats.schema import REJECTS_SCHEMA

__all__ = ["FormatError", "Reject", "ReadReport", "ReadResult", "MAX_RAW_CHARS"]

#: The raw text of a rejected row is kept up to this many characters (a videoinfo row is ~9 KB).
MAX_RAW_CHARS = 1000


class FormatError(ValueError):
    """A malformed LPR4M file or row.

    Attributes:
        path: the file at fault.
        line: 1-based line number in that file (0 when the problem is not tied to a line).
        reason: what is wrong, in words.
    """

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")
        self.path = str(path)
        self.line = int(line)
        self.reason = reason

    def __reduce__(self):  # keep the attributes when the error crosses a process boundary
        return (FormatError, (self.path, self.line, self.reason))


@dataclass(frozen=True)
class Reject:
    """One rejected input row (a row of ``REJECTS_SCHEMA``)."""

    file: str
    line: int
    reason: str
    raw: str

    @staticmethod
    def make(file: str, line: int, reason: str, raw: str | bytes) -> Reject:
        """Build a reject, decoding bytes loss-free (``\\xNN`` escapes) and truncating ``raw``."""
        if isinstance(raw, bytes | bytearray | memoryview):
            raw = bytes(raw).decode("utf-8", errors="backslashreplace")
        if len(raw) > MAX_RAW_CHARS:
            raw = raw[: MAX_RAW_CHARS - 3] + "..."
        return Reject(str(file), int(line), reason, raw)


@dataclass
class ReadReport:
    """Counts and rejects of one read.

    ``rows_read`` counts the input rows examined (lines with content, or JSON entries / pairs);
    ``rows_read == rows_ok + rows_rejected`` and ``rows_ok`` is the number of table rows.
    """

    kind: str
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_rejected: int = 0
    rejects: list[Reject] = field(default_factory=list)

    @property
    def rows_ok(self) -> int:
        """Rows that made it into the table."""
        return self.rows_read - self.rows_rejected

    def add_reject(self, reject: Reject) -> None:
        """Record one rejected row."""
        self.rows_rejected += 1
        self.rejects.append(reject)

    def rejects_table(self) -> pa.Table:
        """The rejects as a table with ``REJECTS_SCHEMA``."""
        return rejects_to_table(self.rejects)

    def reasons(self) -> dict[str, int]:
        """Reject counts per reason (the reason text up to its first colon)."""
        counts: dict[str, int] = {}
        for r in self.rejects:
            key = r.reason.split(":", 1)[0]
            counts[key] = counts.get(key, 0) + 1
        return counts

    def summary(self) -> dict:
        """A JSON-friendly summary (no raw rows)."""
        return {
            "kind": self.kind,
            "files": list(self.files),
            "rows_read": self.rows_read,
            "rows_ok": self.rows_ok,
            "rows_rejected": self.rows_rejected,
            "reasons": self.reasons(),
        }


class ReadResult(NamedTuple):
    """What a reader returns: ``table, report = read_...(path)``."""

    table: pa.Table
    report: ReadReport


def rejects_to_table(rejects: list[Reject]) -> pa.Table:
    """Rejects as a ``REJECTS_SCHEMA`` table."""
    return pa.table(
        {
            "file": pa.array([r.file for r in rejects], pa.string()),
            "line": pa.array([r.line for r in rejects], pa.int64()),
            "reason": pa.array([r.reason for r in rejects], pa.string()),
            "raw": pa.array([r.raw for r in rejects], pa.string()),
        },
        schema=REJECTS_SCHEMA,
    )


class RowSink:
    """Where a reader sends its rows' fate: counts, rejects, and the strict-mode raise."""

    def __init__(self, report: ReadReport, strict: bool) -> None:
        self.report = report
        self.strict = strict

    def read(self, n: int = 1) -> None:
        """Count ``n`` input rows."""
        self.report.rows_read += n

    def reject(self, file: str, line: int, reason: str, raw: str | bytes) -> None:
        """Reject a row: raise :class:`FormatError` in strict mode, record it otherwise."""
        if self.strict:
            raise FormatError(str(file), line, reason)
        self.report.add_reject(Reject.make(file, line, reason, raw))
