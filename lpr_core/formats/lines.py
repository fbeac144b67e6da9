"""Line-oriented reading of LPR4M text files in byte ranges (the unit of streaming and of workers).

A file is cut into byte ranges; a line belongs to the range in which it *starts*, so ranges can be
read independently (by separate processes) and their lines concatenated in order. Line numbers
are 1-based physical lines: a range reports how many lines it holds, and the caller adds the
lines of the ranges before it.

Conventions shared by every text reader: a UTF-8 byte-order mark at the start of a file is
dropped, one ``\\r`` before ``\\n`` is dropped (CRLF files), and empty lines are skipped (they are
not rows). Decoding is strict UTF-8, per line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "BOM",
    "CHUNK_BYTES",
    "RowReject",
    "plan_ranges",
    "read_range",
    "split_lines",
    "iter_lines",
    "decode_line",
]

BOM = b"\xef\xbb\xbf"
#: Default size of a byte range: bounds the memory of a reader (and of each worker).
CHUNK_BYTES = 32 << 20


class RowReject(Exception):
    """Internal: a row is bad for ``reason``; the reader turns it into a reject or a FormatError."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def plan_ranges(paths: list[Path], chunk_bytes: int = CHUNK_BYTES) -> list[tuple[str, int, int]]:
    """Cut files into ``(path, start, end)`` byte ranges of about ``chunk_bytes``.

    Every file gets at least one range (an empty file gets ``(path, 0, 0)``).
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    out: list[tuple[str, int, int]] = []
    for p in paths:
        size = os.path.getsize(p)
        starts = list(range(0, size, chunk_bytes)) or [0]
        for s in starts:
            out.append((str(p), s, min(s + chunk_bytes, size)))
    return out


def read_range(path: str, start: int, end: int) -> bytes:
    """The bytes of the complete lines that start in ``[start, end)`` of ``path``.

    The result ends with ``\\n`` unless the file's last line has none; a BOM at offset 0 is
    removed.
    """
    with open(path, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            fh.readline()  # lands on the first line starting at or after `start`
        pos = fh.tell()
        if pos >= end:
            return b""
        data = fh.read(end - pos)
        if data and not data.endswith(b"\n"):
            data += fh.readline()  # finish the line that starts before `end`
    if start == 0 and data.startswith(BOM):
        data = data[len(BOM) :]
    return data


def split_lines(data: bytes) -> list[bytes]:
    """Physical lines of ``data`` without their ``\\n`` (a final ``\\n`` opens no new line)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def iter_lines(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, line)`` for every non-empty line, ``\\r\\n`` and BOM handled."""
    base = 0
    for p, s, e in plan_ranges([Path(path)], chunk_bytes):
        lines = split_lines(read_range(p, s, e))
        for k, line in enumerate(lines, start=base + 1):
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                yield k, line
        base += len(lines)


def decode_line(raw: bytes) -> str:
    """Strict UTF-8 decode of one line; :class:`RowReject` names the offending byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RowReject(f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from None
