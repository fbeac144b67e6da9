"""Read what the ``validate`` stage checks: the LPR4M annotation files and the download manifests.

Annotation files are read with the lenient readers of :mod:`lpr_core.formats.readers`: a bad
row is skipped and recorded, and the rejects count is itself checked against a threshold. A
manifest is read as it was written (its schema is checked later, not coerced here).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lpr_core.formats.discovery import DiscoveryError, find_lpr4m_files
from lpr_core.formats.readers import SCHEMAS, read_kind
from lpr_core.formats.schema import FRAME_MANIFEST_SCHEMA, IMAGE_MANIFEST_SCHEMA

__all__ = [
    "ValidationInputs",
    "SourceInfo",
    "InputError",
    "MANIFESTS",
    "manifest_path",
    "load_inputs",
]

#: (split, kind) of the four download manifests, and their schemas.
MANIFESTS: dict[tuple[str, str], pa.Schema] = {
    ("train", "frames"): FRAME_MANIFEST_SCHEMA,
    ("train", "images"): IMAGE_MANIFEST_SCHEMA,
    ("test", "frames"): FRAME_MANIFEST_SCHEMA,
    ("test", "images"): IMAGE_MANIFEST_SCHEMA,
}


class InputError(ValueError):
    """An input directory or file that cannot be read at all (names the path)."""


@dataclass
class SourceInfo:
    """What was found for one input (an LPR4M file kind or a manifest).

    Attributes:
        name: ``videoinfo``, ``test_gallery``, ..., or ``manifest/<split>_<kind>``.
        files: the files read (empty when absent).
        rows_read: input rows examined.
        rows_rejected: rows the lenient reader rejected (0 for manifests).
        rejects: the first rejected rows as ``(file name, line, reason)``.
        error: why the input could not be read (it then counts as absent).
    """

    name: str
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_rejected: int = 0
    rejects: list[tuple[str, int, str]] = field(default_factory=list)
    error: str = ""

    @property
    def present(self) -> bool:
        """True when the input was found and read."""
        return bool(self.files) and not self.error


@dataclass
class ValidationInputs:
    """The inputs of one validation run.

    Attributes:
        annotations: LPR4M file kind -> table (``lpr_core.formats.readers.SCHEMAS``); an absent
            kind maps to an empty table of its schema.
        manifests: ``(split, kind)`` -> manifest table as read (None when absent or unreadable).
        sources: input name -> :class:`SourceInfo`.
        download_dir: the download directory (manifest paths are relative to it).
    """

    annotations: dict[str, pa.Table]
    manifests: dict[tuple[str, str], pa.Table | None]
    sources: dict[str, SourceInfo]
    download_dir: Path


def manifest_path(download_dir: str | Path, split: str, kind: str) -> Path:
    """``<download_dir>/manifests/<split>_<kind>.parquet``."""
    return Path(download_dir) / "manifests" / f"{split}_{kind}.parquet"


def _read_one(kind: str, paths: list[str], workers: int, max_examples: int) -> tuple[str, pa.Table | None, SourceInfo]:
    """Read one file kind leniently (runs in a worker process when reading in parallel)."""
    info = SourceInfo(kind, files=list(paths))
    try:
        table, report = read_kind(kind, paths, strict=False, workers=workers)
    except ValueError as exc:  # a file-level fault (FormatError): the whole kind is unusable
        info.error = str(exc)
        return kind, None, info
    info.rows_read = report.rows_read
    info.rows_rejected = report.rows_rejected
    info.rejects = [(Path(r.file).name, r.line, r.reason) for r in report.rejects[:max_examples]]
    return kind, table, info


def _read_annotations(
    directory: Path, workers: int, max_examples: int, meanwhile: Callable[[], None] | None, min_parallel_bytes: int
) -> tuple[dict, dict]:
    try:
        found = {k: [str(p) for p in v] for k, v in find_lpr4m_files(directory).items()}
    except DiscoveryError as exc:
        raise InputError(str(exc)) from None
    tables: dict[str, pa.Table] = {kind: schema.empty_table() for kind, schema in SCHEMAS.items()}
    sources: dict[str, SourceInfo] = {kind: SourceInfo(kind) for kind in SCHEMAS}
    size = {k: sum(os.path.getsize(p) for p in v) for k, v in found.items()}
    # largest first, so that the biggest file does not start last
    kinds = sorted(found, key=lambda k: -size[k])
    if workers > 1 and sum(size.values()) >= min_parallel_bytes:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_read_one, k, found[k], 1, max_examples) for k in kinds]
            if meanwhile is not None:
                meanwhile()
            results = [f.result() for f in futures]
    else:
        results = [_read_one(k, found[k], workers if k == "videoinfo" else 1, max_examples) for k in kinds]
        if meanwhile is not None:
            meanwhile()
    for kind, table, info in results:
        sources[kind] = info
        if table is not None:
            tables[kind] = table
    return tables, sources


def _read_manifest(path: Path, info: SourceInfo) -> pa.Table | None:
    if not path.is_file():
        return None
    info.files = [str(path)]
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        info.error = f"{path}: not a readable Parquet file ({exc})"
        return None
    info.rows_read = table.num_rows
    return table


def load_inputs(
    annotations_dir: str | Path,
    download_dir: str | Path,
    *,
    workers: int = 1,
    max_examples: int = 20,
    meanwhile: Callable[[], None] | None = None,
    min_parallel_bytes: int = 16 << 20,
) -> ValidationInputs:
    """Read every annotation file and manifest there is; nothing missing raises here.

    Args:
        annotations_dir: the directory of the LPR4M files (as released, or a synthetic world),
            searched recursively.
        download_dir: the download stage's output (``manifests/<split>_<kind>.parquet``).
        workers: processes; with more than one, the file kinds are read in parallel (spawned
            processes) once the annotation files hold ``min_parallel_bytes``.
        max_examples: rejected rows kept per file kind (the count is always complete).
        meanwhile: called in this process while the workers read (e.g. a slow import).
        min_parallel_bytes: below this, reading stays in this process (spawning costs more).

    Raises:
        InputError: a directory does not exist, or holds two candidates for one LPR4M file kind.
    """
    annotations_dir, download_dir = Path(annotations_dir), Path(download_dir)
    for what, d in (("annotations", annotations_dir), ("download", download_dir)):
        if not d.is_dir():
            raise InputError(f"{what} directory not found: {d}")
    annotations, sources = _read_annotations(annotations_dir, workers, max_examples, meanwhile, min_parallel_bytes)
    manifests: dict[tuple[str, str], pa.Table | None] = {}
    for split, kind in MANIFESTS:
        info = SourceInfo(f"manifest/{split}_{kind}")
        sources[info.name] = info
        manifests[(split, kind)] = _read_manifest(manifest_path(download_dir, split, kind), info)
    return ValidationInputs(annotations, manifests, sources, download_dir)
