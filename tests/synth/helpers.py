"""Reading a world back with plain parsing, independent of the project's readers."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from lpr_core.formats.schema import FILE_PATTERNS


def one(world: Path, kind: str) -> Path:
    paths = sorted(Path(world).glob(FILE_PATTERNS[kind]))
    assert len(paths) == 1, (kind, paths)
    return paths[0]


def lines(world: Path, kind: str) -> list[str]:
    return one(world, kind).read_text(encoding="utf-8").splitlines()


def load_json(world: Path, kind: str):
    return json.loads(one(world, kind).read_text(encoding="utf-8"))


def videoinfo_rows(world: Path) -> list[list]:
    """Every training_videoinfo row as 11 values, list columns parsed as literals."""
    rows = []
    for n, line in enumerate(lines(world, "videoinfo"), 1):
        cols = line.split("\t")
        assert len(cols) == 11, f"line {n}: {len(cols)} columns"
        cols[1] = ast.literal_eval(cols[1])
        cols[2] = ast.literal_eval(cols[2])
        for i in (5, 8, 9, 10):
            cols[i] = int(cols[i])
        rows.append(cols)
    return rows


def url_ids(world: Path, kind: str) -> list[str]:
    """The ids of a URL list (the last path component without .jpg)."""
    out = []
    for url in lines(world, kind):
        assert url.endswith(".jpg")
        out.append(url.rsplit("/", 1)[1][:-4])
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
