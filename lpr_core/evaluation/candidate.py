"""What the registry gate needs to know about an evaluated model besides its metrics: the version
of the test data it was scored on, and whether that data passed validation."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lpr_core.data.datasets import manifest_path
from lpr_core.data.manifest import ManifestError, read_manifest
from lpr_core.inputs import StageInputError, read_table

__all__ = ["evaluation_data_version", "read_validation_passed"]


def _hash_table(h: Any, name: str, table: pa.Table) -> None:
    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    h.update(name.encode() + b"\0")
    h.update(sink.getvalue().to_pybytes())


def evaluation_data_version(prepared: str | os.PathLike[str], download: str | os.PathLike[str]) -> str:
    """A content hash of the test data: the prepared test tables and the test download manifests.

    The manifests count by content only (id, status, image sha256 and sizes, sorted by id): a
    re-download of the same images from another server or into other shards keeps the version.

    Returns:
        64 hex digits.

    Raises:
        StageInputError: a table or manifest is missing or unreadable.
    """
    h = hashlib.sha256(b"lpr-test-data/1\0")
    for name in ("test_queries", "test_gallery", "test_frame_boxes"):
        _hash_table(h, name, read_table(Path(prepared) / f"{name}.parquet"))
    for kind, id_column in (("frames", "frame_id"), ("images", "image_id")):
        path = manifest_path(download, "test", kind)
        try:
            table = read_manifest(path, kind)
        except ManifestError as exc:
            raise StageInputError(str(exc)) from None
        table = table.select([id_column, "status", "sha256", "width", "height", "original_width", "original_height"])
        table = table.take(pc.sort_indices(table, sort_keys=[(id_column, "ascending")]))
        _hash_table(h, f"manifest/test_{kind}", table)
    return h.hexdigest()


def read_validation_passed(path: str | os.PathLike[str] | None) -> bool:
    """``success`` of a ``validation_summary.json``; False when the file does not exist.

    Raises:
        StageInputError: the file exists but is not a JSON object with a boolean ``success``.
    """
    if path is None or not Path(path).is_file():
        return False
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageInputError(f"{path}: unreadable validation summary ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        raise StageInputError(f"{path}: a validation summary needs a boolean 'success'")
    return data["success"]
