"""Test support: a tiny synthetic world plus download manifests built straight from its sources.

The manifests are what the download stage writes (``FRAME_MANIFEST_SCHEMA`` /
``IMAGE_MANIFEST_SCHEMA`` at ``<download>/manifests/<split>_<kind>.parquet``, files under
``<download>/<split>_<kind>/``), made here with Pillow: every source JPEG is resized with
img2dataset's ``keep_ratio`` rule (smaller side to ``image_size``, originals not bigger than that
left as they are) and re-encoded. No HTTP, no img2dataset: the validate tests stay fast.

Also the defect planters used by the data tests: each one edits a copy of a world in place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lpr_core import ids
from lpr_core.formats.readers import find_lpr4m_files, read_kind
from lpr_core.formats.schema import FRAME_MANIFEST_SCHEMA, IMAGE_MANIFEST_SCHEMA
from lpr_core.synth.layout import source_path
from lpr_core.synth.world import generate_world

SPLIT_KINDS = (("train", "frames"), ("train", "images"), ("test", "frames"), ("test", "images"))
_URL_KIND = {
    ("train", "frames"): "train_frame_urls",
    ("train", "images"): "train_image_urls",
    ("test", "frames"): "test_frame_urls",
    ("test", "images"): "test_image_urls",
}


def keep_ratio_size(width: int, height: int, image_size: int, only_if_bigger: bool = True) -> tuple[int, int]:
    """img2dataset's keep_ratio size: the smaller side becomes ``image_size``."""
    smaller = min(width, height)
    if only_if_bigger and smaller <= image_size:
        return width, height
    scale = image_size / smaller
    return round(width * scale), round(height * scale)


def build_download(world_dir: Path, download_dir: Path, image_size: int, only_if_bigger: bool = True) -> dict:
    """Write manifests and resized files for every URL of a world; returns row counts."""
    from PIL import Image

    (download_dir / "manifests").mkdir(parents=True, exist_ok=True)
    found = find_lpr4m_files(world_dir)
    counts = {}
    for split, kind in SPLIT_KINDS:
        table = read_kind(_URL_KIND[(split, kind)], found[_URL_KIND[(split, kind)]], strict=True).table
        rows = []
        sub = f"{split}_{kind}"
        (download_dir / sub).mkdir(parents=True, exist_ok=True)
        for r in table.to_pylist():
            item = ids.make_frame_id(r["clip_id"], r["frame_index"]) if kind == "frames" else r["image_id"]
            with Image.open(source_path(world_dir, item)) as im:
                ow, oh = im.size
                size = keep_ratio_size(ow, oh, image_size, only_if_bigger)
                out = im.convert("RGB").resize(size, Image.BICUBIC) if size != (ow, oh) else im.convert("RGB")
            rel = f"{sub}/{item}.jpg"
            out.save(download_dir / rel, quality=90)
            data = (download_dir / rel).read_bytes()
            row = {
                "url": r["url"], "path": rel, "tar_member": None, "width": size[0], "height": size[1],
                "original_width": ow, "original_height": oh, "status": "success", "error": None,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            if kind == "frames":
                row.update(frame_id=item, clip_id=r["clip_id"], frame_index=r["frame_index"])
            else:
                row.update(image_id=item)
            rows.append(row)
        schema = FRAME_MANIFEST_SCHEMA if kind == "frames" else IMAGE_MANIFEST_SCHEMA
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), download_dir / "manifests" / f"{sub}.parquet")
        counts[sub] = len(rows)
    return counts


def build_tiny(root: Path, image_size: int) -> tuple[Path, Path]:
    """A tiny world (seed 0) at ``root/world`` and its download at ``root/download``."""
    world = root / "world"
    generate_world(world, size="tiny", seed=0)
    download = root / "download"
    build_download(world, download, image_size)
    return world, download


def copy_world(src_root: Path, dst_root: Path) -> tuple[Path, Path]:
    """Copy a built world and download (the source JPEGs are not needed and not copied)."""
    shutil.copytree(src_root / "world", dst_root / "world", ignore=shutil.ignore_patterns("_source"))
    shutil.copytree(src_root / "download", dst_root / "download")
    return dst_root / "world", dst_root / "download"


# ------------------------------------------------------------------------------ defect planters


def one_file(world: Path, kind: str) -> Path:
    """The single file of an LPR4M kind in a world."""
    return find_lpr4m_files(world)[kind][0]


def read_json(path: Path) -> dict:
    """A JSON annotation file."""
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, obj: dict) -> None:
    """Rewrite a JSON annotation file (a planted defect)."""
    path.write_text(json.dumps(obj), encoding="utf-8")


def read_manifest(download: Path, split: str, kind: str) -> pa.Table:
    """A manifest table."""
    return pq.read_table(download / "manifests" / f"{split}_{kind}.parquet")


def write_manifest(download: Path, split: str, kind: str, table: pa.Table) -> None:
    """Rewrite a manifest (a planted defect)."""
    pq.write_table(table, download / "manifests" / f"{split}_{kind}.parquet")


def set_column(table: pa.Table, name: str, values: list) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (same type)."""
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
