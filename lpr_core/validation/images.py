"""Decode a sample of the downloaded JPEGs: Pillow ``verify`` then a full ``load``, in processes.

A file counts as decodable when both pass. ``verify`` checks the container structure, ``load``
decodes the pixels and so catches a truncated entropy-coded segment (Pillow refuses truncated
images by default). Files in ``webdataset`` shards are read from their tar by member name.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image
from tqdm.auto import tqdm

__all__ = ["decode_error", "decode_files", "select_sample", "decode_sample", "DECODE_COLUMNS"]

#: Columns of the table :func:`decode_sample` returns.
DECODE_COLUMNS = ("split", "kind", "id", "decoded", "error")

_CHUNK = 64
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # "<_io.BytesIO object at 0x...>" varies per run


def decode_error(data: bytes) -> str:
    """Why ``data`` is not a decodable image ("" when it is)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        return _OBJECT_REPR.sub("the data", f"{type(exc).__name__}: {exc}")[:300]
    return ""


def _inside(root: Path, rel: str) -> Path | None:
    p = (root / rel).resolve()
    return p if p == root or root in p.parents else None


def _decode_group(root: str, path: str, members: Sequence[str | None]) -> list[str]:
    """Decode one file (``members == [None]``) or members of one tar; one error string per item."""
    base = Path(root).resolve()
    full = _inside(base, path)
    if full is None:
        return [f"path {path!r} is outside the download directory"] * len(members)
    if not full.is_file():
        return [f"file not found: {path}"] * len(members)
    if members == [None]:
        try:
            return [decode_error(full.read_bytes())]
        except OSError as exc:
            return [f"unreadable: {exc}"]
    out: list[str] = []
    try:
        with tarfile.open(full) as tar:
            for m in members:
                try:
                    fh = tar.extractfile(str(m))
                except KeyError:
                    fh = None
                out.append("tar member not found: " + str(m) if fh is None else decode_error(fh.read()))
    except (OSError, tarfile.TarError) as exc:
        return [f"unreadable tar {path}: {exc}"] * len(members)
    return out


def _decode_batch(root: str, groups: list[tuple[str, list[str | None]]]) -> list[str]:
    errors: list[str] = []
    for path, members in groups:
        errors.extend(_decode_group(root, path, members))
    return errors


def decode_files(
    root: str | Path,
    paths: Sequence[str],
    members: Sequence[str | None] | None = None,
    *,
    workers: int = 2,
    min_parallel: int = 256,
    progress: bool = False,
) -> list[str]:
    """Decode files under ``root``; one error string per item, ``""`` for a decodable file.

    Args:
        root: the download directory; ``paths`` are relative to it (a path leading outside it is
            an error, never read).
        paths: file paths (the JPEG, or the tar of a ``webdataset`` shard).
        members: tar member names (None entries for plain files); None for all plain files.
        workers: decoding processes (spawned, so that no lock of the parent is inherited).
        min_parallel: below this many items decoding stays in this process.
        progress: show a progress bar.
    """
    n = len(paths)
    members = list(members) if members is not None else [None] * n
    if len(members) != n:
        raise ValueError(f"{n} paths but {len(members)} members")
    # group consecutive items of the same tar so that it is opened once per batch
    groups: list[tuple[str, list[str | None]]] = []
    for p, m in zip(paths, members):
        if m is not None and groups and groups[-1][0] == p and groups[-1][1][0] is not None:
            groups[-1][1].append(m)
        else:
            groups.append((p, [m]))
    batches: list[list[tuple[str, list[str | None]]]] = []
    size = 0
    for g in groups:
        if not batches or size >= _CHUNK:
            batches.append([])
            size = 0
        batches[-1].append(g)
        size += len(g[1])
    root_s = str(root)
    bar = tqdm(total=n, desc="decode images", unit="img", disable=not progress)
    errors: list[str] = []
    if workers <= 1 or n < min_parallel:
        for b in batches:
            errors.extend(_decode_batch(root_s, b))
            bar.update(sum(len(g[1]) for g in b))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for b, res in zip(batches, pool.map(_decode_batch, [root_s] * len(batches), batches)):
                errors.extend(res)
                bar.update(sum(len(g[1]) for g in b))
    bar.close()
    return errors


def select_sample(ok: np.ndarray, sample: int | str, seed: int, salt: str) -> np.ndarray:
    """Row indices to decode among rows where ``ok`` (all of them, or ``sample`` at random).

    The choice is a pure function of ``(seed, salt)``: reruns decode the same files.
    """
    idx = np.flatnonzero(ok)
    if sample == "all" or int(sample) >= len(idx):
        return idx
    word = int.from_bytes(salt.encode("utf-8")[:8].ljust(8, b"\0"), "little")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), word]))
    return np.sort(rng.choice(idx, size=int(sample), replace=False))


def decode_sample(
    manifests: dict[tuple[str, str], pa.Table | None],
    download_dir: str | Path,
    *,
    sample: int | str = "all",
    seed: int = 0,
    workers: int = 2,
    progress: bool = False,
    min_parallel: int = 256,
) -> pd.DataFrame:
    """Decode the sampled downloaded files of every manifest.

    Only rows with ``status == "success"`` are candidates. A manifest without the columns
    needed (``path``, ``status`` and its id) is skipped: its schema check reports it.

    Returns:
        A DataFrame with :data:`DECODE_COLUMNS`: ``decoded`` is False when the file is missing
        or does not decode, ``error`` says why.
    """
    parts: list[pd.DataFrame] = []
    for (split, kind), table in manifests.items():
        id_col = "frame_id" if kind == "frames" else "image_id"
        if table is None or not {id_col, "path", "status"} <= set(table.column_names):
            continue
        ok = pc.fill_null(pc.equal(table["status"], "success"), False).to_numpy(zero_copy_only=False)
        rows = select_sample(ok, sample, seed, f"{split}_{kind}")
        if not len(rows):
            continue
        sub = table.take(pa.array(rows))
        paths = [p or "" for p in sub["path"].to_pylist()]
        members: Iterable[str | None] = (
            [m or None for m in sub["tar_member"].to_pylist()] if "tar_member" in sub.column_names else None
        )
        errors = decode_files(
            download_dir, paths, members, workers=workers, min_parallel=min_parallel, progress=progress
        )
        parts.append(
            pd.DataFrame(
                {
                    "split": split,
                    "kind": kind,
                    "id": sub[id_col].to_pylist(),
                    "decoded": [not e for e in errors],
                    "error": errors,
                }
            )
        )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=bool if c == "decoded" else object) for c in DECODE_COLUMNS})
    return pd.concat(parts, ignore_index=True)
