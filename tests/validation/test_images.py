"""Decoding the downloaded files: Pillow verify + load, plain files and tar members, in processes."""

from __future__ import annotations

import io
import tarfile

import pyarrow as pa
import pytest
from PIL import Image

from lpr_core.formats.schema import IMAGE_MANIFEST_SCHEMA
from lpr_core.validation.images import decode_error, decode_files, decode_sample, select_sample


def jpeg(size=(40, 30), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def files(tmp_path):
    good = jpeg()
    (tmp_path / "good.jpg").write_bytes(good)
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"\x00not a jpeg" * 50)
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for name, data in (("a.jpg", good), ("b.jpg", good[:-40])):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return tmp_path


def test_decode_error_tells_good_from_truncated_and_garbage():
    good = jpeg()
    assert decode_error(good) == ""
    assert "truncated" in decode_error(good[: len(good) // 2]).lower()
    assert decode_error(b"garbage" * 20).startswith("UnidentifiedImageError")


def test_decode_files_plain_files_and_tar_members(files):
    errors = decode_files(
        files,
        ["good.jpg", "truncated.jpg", "garbage.jpg", "missing.jpg", "00000.tar", "00000.tar", "00000.tar", "../x.jpg"],
        [None, None, None, None, "a.jpg", "b.jpg", "c.jpg", None],
        workers=1,
    )
    assert errors[0] == "" and errors[4] == ""
    assert errors[1] and errors[2] and errors[5]
    assert errors[3] == "file not found: missing.jpg"
    assert errors[6] == "tar member not found: c.jpg"
    assert "outside the download directory" in errors[7]


def test_parallel_decoding_gives_the_serial_result(files):
    paths = ["good.jpg", "truncated.jpg", "garbage.jpg"] * 30
    serial = decode_files(files, paths, workers=1)
    parallel = decode_files(files, paths, workers=2, min_parallel=0)
    assert parallel == serial


def test_select_sample_is_seeded_and_only_from_ok_rows():
    ok = [i % 3 != 0 for i in range(30)]
    import numpy as np

    ok = np.array(ok)
    every = select_sample(ok, "all", 0, "x")
    assert every.tolist() == np.flatnonzero(ok).tolist()
    some = select_sample(ok, 5, 0, "x")
    assert len(some) == 5 and ok[some].all()
    assert some.tolist() == select_sample(ok, 5, 0, "x").tolist()
    assert some.tolist() != select_sample(ok, 5, 1, "x").tolist()


def test_decode_sample_reads_successful_rows_of_a_manifest(files):
    rows = [
        {"image_id": f"0000000{i}-0000-4000-8000-000000000000", "url": "u", "path": p, "tar_member": None,
         "width": 40, "height": 30, "original_width": 40, "original_height": 30, "status": s, "error": None,
         "sha256": None}
        for i, (p, s) in enumerate([("good.jpg", "success"), ("garbage.jpg", "success"), ("x.jpg", "failed")])
    ]
    table = pa.Table.from_pylist(rows, schema=IMAGE_MANIFEST_SCHEMA)
    out = decode_sample({("test", "images"): table, ("train", "images"): None}, files, workers=1)
    assert out["decoded"].tolist() == [True, False]
    assert out["id"].tolist() == [rows[0]["image_id"], rows[1]["image_id"]]
    assert decode_sample({("test", "images"): table}, files, sample=0, workers=1).empty
