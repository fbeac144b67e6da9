"""lpr_core.data.manifest: shards -> outcomes -> manifest, stored-JPEG integrity, error reasons.

The shard files here are written in img2dataset's exact layout (``NNNNN.parquet`` with its
columns, ``NNNNN_stats.json`` last, samples under ``NNNNN/`` or in ``NNNNN.tar``); the real
img2dataset runs in ``tests/stages/test_download.py``.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lpr_core.data.manifest import (
    ManifestError,
    Outcome,
    build_manifest,
    check_jpeg,
    classify_error,
    complete_shards,
    count_outcomes,
    format_error,
    jpeg_size,
    read_manifest,
    read_shards,
    verify_stored,
    write_table_atomic,
)
from lpr_core.formats.schema import FRAME_MANIFEST_SCHEMA, IMAGE_MANIFEST_SCHEMA

PREFIX = "http://127.0.0.1:9/lpr/"
LIVE = "0a1b2c3d-0000-4000-8000-00000000abcd"


def frame_url(i: int) -> str:
    return f"{PREFIX}{LIVE}-1000-2000-{i:04d}.jpg"


def image_url(i: int) -> str:
    return f"{PREFIX}{uuid.UUID(int=i + 1)}.jpg"


def jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    rng = np.random.default_rng(width * 1000 + height)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
        buf, "JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


SHARD_SCHEMA = pa.schema([
    ("url", pa.string()), ("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("original_width", pa.int32()),
    ("original_height", pa.int32()), ("sha256", pa.string()),
])


def write_shard(folder: Path, shard: int, rows: list[dict], fmt: str = "files", stats: bool = True,
                images: dict[str, bytes] | None = None) -> None:
    """One img2dataset shard: rows are (url, status, error, size); successes get a JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{shard:05d}"
    table_rows = []
    tar = tarfile.open(folder / f"{name}.tar", "w") if fmt == "webdataset" else None
    for k, r in enumerate(rows):
        key = f"{shard:05d}{k:02d}"
        row = {"url": r["url"], "key": key, "status": r.get("status", "success"),
               "error_message": r.get("error"), "width": None, "height": None, "original_width": None,
               "original_height": None, "sha256": None}
        if row["status"] == "success":
            w, h = r.get("size", (40, 30))
            data = (images or {}).get(r["url"], jpeg(w, h))
            row.update(width=w, height=h, original_width=w * 2, original_height=h * 2, sha256="ab" * 32)
            if tar is not None:
                info = tarfile.TarInfo(f"{key}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                (folder / name).mkdir(exist_ok=True)
                (folder / name / f"{key}.jpg").write_bytes(data)
        table_rows.append(row)
    if tar is not None:
        tar.close()
    pq.write_table(pa.Table.from_pylist(table_rows, schema=SHARD_SCHEMA), folder / f"{name}.parquet")
    if stats:
        (folder / f"{name}_stats.json").write_text(json.dumps({"count": len(rows)}))


# --------------------------------------------------------------------------- error reasons


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("HTTP Error 404: Not Found", "http_404"),
        ("HTTP Error 503: Service Unavailable", "http_503"),
        ("timed out", "timeout"),
        ("<urlopen error timed out>", "timeout"),
        ("<urlopen error [Errno 111] Connection refused>", "connection"),
        ("Remote end closed connection without response", "connection"),
        ("IncompleteRead(100 bytes read, 20 more expected)", "incomplete"),
        ("Image decoding error", "decode"),
        ("image file is truncated (3 bytes not processed)", "decode"),
        ("Use of image disallowed by X-Robots-Tag directive", "disallowed"),
        ("image too small", "filtered"),
        ("something odd", "other"),
        (None, "other"),
    ],
)
def test_classify_error(message, reason):
    assert classify_error(message) == reason
    assert format_error(message).startswith(f"{reason}: ")


# ------------------------------------------------------------------------------- integrity


def test_jpeg_size_reads_baseline_and_progressive_headers():
    assert jpeg_size(jpeg(37, 21)) == (37, 21)
    assert jpeg_size(jpeg(64, 48, progressive=True)) == (64, 48)
    with pytest.raises(ValueError, match="SOI"):
        jpeg_size(b"\x89PNG....")
    with pytest.raises(ValueError):
        jpeg_size(jpeg(20, 20)[:40])  # cut inside the headers


def test_check_jpeg_catches_truncation_garbage_and_wrong_size():
    data = jpeg(40, 30)
    assert check_jpeg(data, 40, 30) is None
    assert "EOI" in check_jpeg(data[: len(data) * 2 // 3], 40, 30)
    assert "SOI" in check_jpeg(os.urandom(200).replace(b"\xff", b"\x00"))
    assert check_jpeg(b"") == "empty file"
    assert "shard says 41x30" in check_jpeg(data, 41, 30)


# ---------------------------------------------------------------------------------- shards


def test_read_shards_maps_urls_to_outcomes_with_relative_paths(tmp_path):
    out = tmp_path / "out"
    folder = out / "test_frames"
    write_shard(folder, 0, [{"url": frame_url(0)}, {"url": frame_url(1), "status": "failed_to_download",
                                                   "error": "HTTP Error 404: Not Found"}])
    write_shard(folder, 1, [{"url": frame_url(2), "size": (50, 20)}])
    write_shard(folder, 2, [{"url": frame_url(3)}], stats=False)  # incomplete: ignored
    assert [s for s, _ in complete_shards(folder)] == [0, 1]
    got = read_shards(folder, out, "frames", "files")
    assert set(got) == {frame_url(0), frame_url(1), frame_url(2)}
    ok = got[frame_url(2)]
    assert ok.ok and ok.path == "test_frames/00001/0000100.jpg" and ok.tar_member is None
    assert (ok.width, ok.height, ok.original_width, ok.original_height) == (50, 20, 100, 40)
    assert (out / ok.path).is_file()
    bad = got[frame_url(1)]
    assert not bad.ok and bad.error == "http_404: HTTP Error 404: Not Found" and bad.path is None


def test_read_shards_webdataset_paths(tmp_path):
    folder = tmp_path / "train_images"
    write_shard(folder, 0, [{"url": image_url(0)}], fmt="webdataset")
    o = read_shards(folder, tmp_path, "images", "webdataset")[image_url(0)]
    assert (o.path, o.tar_member) == ("train_images/00000.tar", "0000000.jpg")


def test_invalid_url_in_a_shard_names_file_and_row(tmp_path):
    folder = tmp_path / "train_frames"
    write_shard(folder, 0, [{"url": frame_url(0)}, {"url": f"{PREFIX}../../etc/passwd.jpg"}])
    with pytest.raises(ManifestError) as info:
        read_shards(folder, tmp_path, "frames", "files")
    assert f"{folder / '00000.parquet'}: row 2" in str(info.value)
    assert "invalid frame URL" in str(info.value)


def test_stale_shard_url_is_an_error(tmp_path):
    folder = tmp_path / "test_images"
    write_shard(folder, 0, [{"url": image_url(0)}, {"url": image_url(1)}])
    with pytest.raises(ManifestError, match=r"row 2: URL .* is not in the input URL list"):
        read_shards(folder, tmp_path, "images", "files", expected_urls={image_url(0): None})


def test_unreadable_shard_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "test_images"
    folder.mkdir()
    (folder / "00000.parquet").write_bytes(b"not parquet")
    (folder / "00000_stats.json").write_text("{}")
    with pytest.raises(ManifestError, match="00000.parquet: unreadable img2dataset shard"):
        read_shards(folder, tmp_path, "images", "files")


@pytest.mark.parametrize("fmt", ["files", "webdataset"])
def test_verify_stored_flags_truncated_and_missing_samples(tmp_path, fmt):
    folder = tmp_path / "test_frames"
    good = jpeg(40, 30)
    images = {frame_url(1): good[: len(good) // 2]}  # stored truncated
    write_shard(folder, 0, [{"url": frame_url(i)} for i in range(4)], fmt=fmt, images=images)
    outcomes = read_shards(folder, tmp_path, "frames", fmt)
    if fmt == "files":
        os.remove(tmp_path / outcomes[frame_url(2)].path)
    else:
        outcomes[frame_url(2)] = Outcome(frame_url(2), "success", "test_frames/00000.tar", "gone.jpg", 40, 30)
    bad = verify_stored(tmp_path, outcomes.values(), threads=2)
    assert set(bad) == {frame_url(1), frame_url(2)}
    assert bad[frame_url(1)].startswith("corrupt_output: ") and "EOI" in bad[frame_url(1)]
    assert bad[frame_url(2)].startswith("corrupt_output: ")


# -------------------------------------------------------------------------------- manifest


def test_build_manifest_lists_every_url_once_in_order():
    urls = [frame_url(i) for i in range(5)]
    outcomes = {
        urls[0]: Outcome(urls[0], "success", "test_frames/00000/0.jpg", None, 10, 8, 20, 16, None, "s0"),
        urls[1]: Outcome(urls[1], "failed", error="http_404: HTTP Error 404: Not Found"),
        urls[3]: Outcome(urls[3], "success", "test_frames/retried/x.jpg", None, 10, 8, 20, 16, None, "s3", "retry"),
    }
    table = build_manifest("frames", urls, outcomes)
    assert table.schema.equals(FRAME_MANIFEST_SCHEMA)
    rows = table.to_pylist()
    assert [r["url"] for r in rows] == urls
    assert rows[0]["frame_id"] == f"{LIVE}-1000-2000-0000" and rows[0]["frame_index"] == 0
    assert rows[0]["clip_id"] == f"{LIVE}-1000-2000"
    assert rows[1]["status"] == "failed" and rows[1]["error"].startswith("http_404") and rows[1]["path"] is None
    assert rows[2]["status"] == "failed" and rows[2]["error"].startswith("missing: ")
    assert rows[3]["path"] == "test_frames/retried/x.jpg" and rows[3]["sha256"] == "s3"
    counts = count_outcomes(urls, outcomes)
    assert counts == {"total": 5, "success": 2, "recovered_by_retry": 1, "failed": 3,
                      "failed_by_reason": {"http_404": 1, "missing": 2}}


def test_build_manifest_images_and_bad_input():
    table = build_manifest("images", [image_url(0)], {})
    assert table.schema.equals(IMAGE_MANIFEST_SCHEMA)
    assert table.column("image_id").to_pylist() == [str(uuid.UUID(int=1))]
    with pytest.raises(ManifestError, match="twice"):
        build_manifest("images", [image_url(0), image_url(0)], {})
    with pytest.raises(ManifestError, match="row 1: invalid image URL"):
        build_manifest("images", [frame_url(0)], {})


def test_write_table_atomic_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "manifests" / "test_images.parquet"
    write_table_atomic(build_manifest("images", [image_url(0)], {}), path)
    write_table_atomic(build_manifest("images", [image_url(0), image_url(1)], {}), path)
    assert read_manifest(path, "images").num_rows == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["test_images.parquet"]
    with pytest.raises(ManifestError, match="schema differs"):
        read_manifest(path, "frames")
