"""LPR4M directory -> Parquet tables: contents, rejects file, report, atomicity."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from lpr_core.formats import writers
from lpr_core.formats.parquet import REJECTS_FILE, REPORT_FILE, convert_dir, convert_files, write_rejects
from lpr_core.formats.readers import SCHEMAS, FormatError, Reject, find_lpr4m_files, read_kind
from lpr_core.formats.schema import REJECTS_SCHEMA

from .helpers import make_rows, write_world


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def test_convert_dir_writes_every_kind_and_a_report(tmp_path):
    world = write_world(tmp_path / "src")
    out = tmp_path / "out"
    reports = convert_dir(world.root, out)
    found = find_lpr4m_files(world.root)
    assert sorted(reports) == sorted(found)
    for kind, files in found.items():
        table = pq.read_table(out / f"{kind}.parquet")
        assert table.schema.equals(SCHEMAS[kind])
        assert table.equals(read_kind(kind, files).table), kind
    rejects = pq.read_table(out / REJECTS_FILE)
    assert rejects.schema.equals(REJECTS_SCHEMA) and rejects.num_rows == 0
    summary = json.loads((out / REPORT_FILE).read_text())
    assert summary["videoinfo"]["rows_read"] == len(world.rows)
    assert len(summary["videoinfo"]["files"]) == 2
    assert _leftovers(out) == []


def test_convert_dir_collects_rejects_of_every_kind(tmp_path):
    world = write_world(tmp_path / "src")
    frame_list = world.path("test_frame_urls")
    frame_list.write_text(frame_list.read_text() + "not a url\n")
    asr = world.path("test_asr")
    asr.write_text("../x\tboom\n" + asr.read_text())
    part = sorted(world.root.glob("training_videoinfo*"))[1]
    part.write_text(part.read_text() + "only\tthree\tcolumns\n")
    reports = convert_dir(world.root, tmp_path / "out")
    rejects = pq.read_table(tmp_path / "out" / REJECTS_FILE).to_pylist()
    got = sorted((r["file"].rsplit("/", 1)[-1], r["line"]) for r in rejects)
    assert got == sorted(
        [
            (frame_list.name, len(world.test_frame_urls) + 1),
            (asr.name, 1),
            (part.name, len(world.rows) - len(world.rows) // 2 + 1),
        ]
    )
    assert reports["test_asr"].rows_rejected == 1
    summary = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert summary["videoinfo"]["reasons"] == {"expected 11 tab-separated columns, got 3": 1}


def test_strict_failure_leaves_previous_output_untouched(tmp_path):
    rows = make_rows(40, seed=5, max_frames=30)
    src = writers.write_videoinfo(tmp_path / "training_videoinfo_1.txt", rows)
    out = tmp_path / "out" / "videoinfo.parquet"
    convert_files("videoinfo", src, out)
    before = out.read_bytes()
    src.write_text(src.read_text() + "bad row\n")
    with pytest.raises(FormatError) as exc:
        convert_files("videoinfo", src, out, strict=True, chunk_bytes=2000)  # fails after some batches
    assert exc.value.line == 41
    assert out.read_bytes() == before
    assert _leftovers(out.parent) == []
    report = convert_files("videoinfo", src, out, chunk_bytes=2000)  # lenient: rewritten
    assert report.rows_rejected == 1 and pq.read_table(out).num_rows == 40


def test_convert_files_with_workers_matches_one_process(tmp_path):
    rows = make_rows(30, seed=8, max_frames=50)
    src = writers.write_videoinfo(tmp_path / "training_videoinfo_1.txt", rows)
    one = convert_files("videoinfo", src, tmp_path / "one.parquet")
    two = convert_files("videoinfo", src, tmp_path / "two.parquet", workers=2, chunk_bytes=4000)
    assert pq.read_table(tmp_path / "one.parquet").equals(pq.read_table(tmp_path / "two.parquet"))
    assert one.rows_read == two.rows_read == 30


def test_convert_dir_without_lpr4m_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="no LPR4M file"):
        convert_dir(tmp_path, tmp_path / "out")


REJECTS = [
    Reject("a.txt", 3, "expected 11 tab-separated columns, got 2", "x\ty"),
    Reject("b.json", 1, "key: invalid clip_id", 'line\nbreak \\ "q"'),
]


def test_write_rejects_parquet(tmp_path):
    path = write_rejects(REJECTS, tmp_path / "r" / "rejects.parquet")
    table = pq.read_table(path)
    assert table.schema.equals(REJECTS_SCHEMA)
    assert table.to_pylist() == [r.__dict__ for r in REJECTS]


def test_write_rejects_tsv_keeps_one_reject_per_line(tmp_path):
    path = write_rejects(REJECTS, tmp_path / "rejects.tsv")
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "file\tline\treason\traw"
    assert lines[1] == "a.txt\t3\texpected 11 tab-separated columns, got 2\tx\\ty"
    assert lines[2] == 'b.json\t1\tkey: invalid clip_id\tline\\nbreak \\\\ "q"'
    assert lines[3:] == [""]
