"""LPR4M files -> Parquet tables, written atomically (temporary file, then rename).

``convert_dir(src, out)`` is what later stages call: it finds every LPR4M file under ``src``
(``FILE_PATTERNS``, :func:`~lpr_core.formats.discovery.find_lpr4m_files`) and writes, per kind found, ``out/<kind>.parquet`` (all files of a kind, e.g.
the training_videoinfo parts, in one table), plus ``out/rejects.parquet`` (``REJECTS_SCHEMA``) and
``out/conversion_report.json`` (rows read / rejected per kind). A rerun overwrites them; an
interrupted run leaves no partial file behind.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lpr_core.formats.discovery import find_lpr4m_files
from lpr_core.formats.lines import CHUNK_BYTES
from lpr_core.formats.readers import SCHEMAS, PathsLike, iter_batches
from lpr_core.formats.report import ReadReport, Reject, RowSink, rejects_to_table

__all__ = [
    "REJECTS_FILE",
    "REPORT_FILE",
    "atomic_path",
    "write_table",
    "write_rejects",
    "convert_files",
    "convert_dir",
]

REJECTS_FILE = "rejects.parquet"
REPORT_FILE = "conversion_report.json"
_COMPRESSION = "zstd"
# Dictionary-encode only the string columns that repeat: on unique ids and free text (clip ids of
# videoinfo, URLs, ASR) the attempt costs time and saves nothing.
_REPEATED = {"live_id", "image_id", "category_name", "file", "reason"}


def _dictionary_columns(schema: pa.Schema, kind: str | None = None) -> list[str]:
    names = set(_REPEATED)
    if kind in ("train_frame_urls", "test_frame_urls", "test_frame_boxes"):
        names.add("clip_id")  # ~118 frames per clip
    return [n for n in schema.names if n in names]


class atomic_path:
    """Context manager yielding a temporary path next to ``path``; renamed onto it on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to the Parquet file ``path`` atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=_COMPRESSION, use_dictionary=_dictionary_columns(table.schema))
    return Path(path)


def write_rejects(rejects: Iterable[Reject] | ReadReport, path: str | Path) -> Path:
    """Write rejected rows to ``path``: Parquet (``REJECTS_SCHEMA``), or TSV when it ends in ``.tsv``.

    The TSV has a header line ``file line reason raw``; tabs and newlines inside a value are
    written as ``\\t`` and ``\\n`` so that every reject stays on one line.
    """
    items = rejects.rejects if isinstance(rejects, ReadReport) else list(rejects)
    path = Path(path)
    if path.suffix == ".tsv":

        def esc(v: object) -> str:
            return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

        text = "file\tline\treason\traw\n" + "".join(
            f"{esc(r.file)}\t{r.line}\t{esc(r.reason)}\t{esc(r.raw)}\n" for r in items
        )
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path
    return write_table(rejects_to_table(items), path)


def convert_files(
    kind: str,
    paths: PathsLike,
    out_path: str | Path,
    *,
    strict: bool = False,
    workers: int = 1,
    fast: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = False,
) -> ReadReport:
    """Stream LPR4M files of one ``kind`` into the Parquet file ``out_path`` (atomically).

    Memory stays bounded: batches are written as they are parsed.

    Args:
        kind: a ``FILE_PATTERNS`` key.
        paths: a path, a glob pattern or a list of paths (one output table).
        out_path: the Parquet file to write.
        strict: raise :class:`FormatError` at the first bad row (nothing is written then).
        workers: parsing processes for ``videoinfo``.
        fast: use the fast paths (same output without them).
        chunk_bytes: bytes parsed at once per worker.
        progress: show a progress bar.

    Returns:
        The read report (rows read, rejected, and the rejects).
    """
    report = ReadReport(kind)
    sink = RowSink(report, strict)
    schema = SCHEMAS[kind]
    with atomic_path(out_path) as tmp:
        with pq.ParquetWriter(
            tmp, schema, compression=_COMPRESSION, use_dictionary=_dictionary_columns(schema, kind)
        ) as writer:
            for batch in iter_batches(
                kind, paths, sink, workers=workers, fast=fast, chunk_bytes=chunk_bytes, progress=progress
            ):
                writer.write_batch(batch)
    return report


def convert_dir(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    strict: bool = False,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, ReadReport]:
    """Convert every LPR4M file found in ``src_dir`` to ``out_dir/<kind>.parquet``.

    Also writes ``out_dir/rejects.parquet`` (all rejected rows, every kind) and
    ``out_dir/conversion_report.json``.

    Args:
        src_dir: the directory holding the LPR4M release files (searched recursively).
        out_dir: where the tables go (created if needed).
        strict: raise at the first bad row instead of skipping it.
        workers: parsing processes for training_videoinfo.
        progress: show progress bars.

    Returns:
        kind -> its read report, for the kinds found.

    Raises:
        FileNotFoundError: ``src_dir`` holds no LPR4M file.
        FormatError: a file-level fault, (strict) a bad row, or two candidates for one file kind
            (:class:`~lpr_core.formats.discovery.DiscoveryError`).
    """
    found = find_lpr4m_files(src_dir)
    if not found:
        raise FileNotFoundError(f"no LPR4M file in {src_dir}")
    out_dir = Path(out_dir)
    reports: dict[str, ReadReport] = {}
    for kind, files in found.items():
        reports[kind] = convert_files(
            kind, files, out_dir / f"{kind}.parquet", strict=strict, workers=workers, progress=progress
        )
    write_rejects([r for rep in reports.values() for r in rep.rejects], out_dir / REJECTS_FILE)
    summary = {kind: rep.summary() for kind, rep in reports.items()}
    with atomic_path(out_dir / REPORT_FILE) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return reports
