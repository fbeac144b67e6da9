"""`lpr inspect DIR [--strict]` through the real command entry point."""

from __future__ import annotations

import pytest

from lpr_core import cli

from .helpers import write_world


def test_inspect_clean_directory(tmp_path, capsys):
    world = write_world(tmp_path)
    assert cli.main(["inspect", str(tmp_path), "--strict"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}: 11 LPR4M file(s)" in out
    assert f"training_videoinfo_full_part_00.txt  [videoinfo]  rows={len(world.rows) // 2} " in out
    assert f"rows={len(world.train_frame_urls)} ok={len(world.train_frame_urls)} rejected=0" in out
    assert "total: 0 row(s) rejected, 0 file(s) unreadable" in out


def test_inspect_lists_rejects_and_strict_fails(tmp_path, capsys):
    world = write_world(tmp_path)
    urls = world.path("test_image_urls")
    bad = [f"http://x/{k}.jpg" for k in range(7)]
    urls.write_text(urls.read_text() + "\n".join(bad) + "\n")
    first_bad = len(world.test_image_urls) + 1

    assert cli.main(["inspect", str(tmp_path)]) == 0  # lenient: reported, not fatal
    out = capsys.readouterr().out
    assert "rejected=7" in out
    assert f"    line {first_bad}: invalid image URL: 'http://x/0.jpg'" in out
    assert f"    line {first_bad + 4}:" in out and f"    line {first_bad + 5}:" not in out  # first 5 shown
    assert "    ... and 2 more" in out
    assert "total: 7 row(s) rejected" in out

    assert cli.main(["inspect", str(tmp_path), "--strict", "--show", "1"]) == 1
    out = capsys.readouterr().out
    assert f"line {first_bad}:" in out and f"line {first_bad + 1}:" not in out


def test_inspect_reports_an_unreadable_file(tmp_path, capsys):
    world = write_world(tmp_path)
    world.path("test_gallery").write_text("[1, 2")
    assert cli.main(["inspect", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "test_liveid_to_gallery_2.json  [test_gallery]  ERROR:" in out and "invalid JSON" in out
    assert "test_videoid_to_gtimage_4.json  [test_gt_images]  rows=4" in out  # the others are still read


def test_inspect_flags_empty_files(tmp_path, capsys):
    (tmp_path / "test_videoid_asr_0.txt").write_text("")
    assert cli.main(["inspect", str(tmp_path), "--strict"]) == 0
    assert "rows=0 ok=0 rejected=0  (empty)" in capsys.readouterr().out


def test_inspect_usage_errors(tmp_path, capsys):
    assert cli.main(["inspect", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli.main(["inspect", str(tmp_path)]) == 2
    assert "no LPR4M file" in capsys.readouterr().err


@pytest.mark.slow
def test_inspect_and_convert_a_synthetic_world(tmp_path, capsys):
    from lpr_core.formats.parquet import convert_dir
    from lpr_core.synth.world import generate_world

    world = generate_world(tmp_path / "world", size="tiny", seed=0)
    assert cli.main(["inspect", str(world.out_dir), "--strict"]) == 0
    assert "total: 0 row(s) rejected, 0 file(s) unreadable" in capsys.readouterr().out
    reports = convert_dir(world.out_dir, tmp_path / "tables")
    assert all(r.rows_rejected == 0 and r.rows_read > 0 for r in reports.values())
