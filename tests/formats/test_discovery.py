"""Finding the LPR4M files of a release folder: flat, unpacked into sub-folders, or ambiguous."""

from __future__ import annotations

import pickle

import pytest

from lpr_core import cli
from lpr_core.formats.discovery import DiscoveryError, find_lpr4m_files, find_one
from lpr_core.formats.schema import FILE_PATTERNS

from .helpers import write_world


def _unpack(root, layout: dict[str, str]) -> dict[str, str]:
    """Move the files of a flat world into sub-folders: kind -> folder; returns name -> new relative path."""
    moved = {}
    for kind, files in find_lpr4m_files(root).items():
        for path in files:
            folder = root / layout[kind]
            folder.mkdir(parents=True, exist_ok=True)
            path.rename(folder / path.name)
            moved[path.name] = f"{layout[kind]}/{path.name}"
    return moved


RELEASE_LAYOUT = {
    "videoinfo": "train", "train_frame_urls": "train", "train_image_urls": "train",
    "test_frame_urls": "test", "test_image_urls": "test",
    **{k: "test/annotations" for k in ("test_asr", "test_titles", "test_gt_images", "test_frame_boxes",
                                      "test_gallery")},
}


def test_a_flat_folder_gives_every_kind_once_and_videoinfo_parts_in_order(tmp_path):
    write_world(tmp_path)
    found = find_lpr4m_files(tmp_path)
    assert list(found) == list(FILE_PATTERNS)
    assert [p.name for p in found["videoinfo"]] == ["training_videoinfo_full_part_00.txt",
                                                    "training_videoinfo_full_part_01.txt"]
    assert all(len(v) == 1 for k, v in found.items() if k != "videoinfo")


def test_sub_folders_are_searched(tmp_path):
    write_world(tmp_path)
    flat = {k: [p.name for p in v] for k, v in find_lpr4m_files(tmp_path).items()}
    _unpack(tmp_path, RELEASE_LAYOUT)
    assert not any(p.is_file() for p in tmp_path.iterdir())  # nothing left at the top
    found = find_lpr4m_files(tmp_path)
    assert {k: [p.name for p in v] for k, v in found.items()} == flat
    assert all(p.parent == tmp_path / RELEASE_LAYOUT[k] for k, v in found.items() for p in v)
    assert find_one(tmp_path, "test_gallery").parent == tmp_path / "test" / "annotations"


def test_two_candidates_for_one_kind_name_both_paths(tmp_path):
    write_world(tmp_path)
    copy = tmp_path / "backup" / "test_liveid_to_gallery_2.json"
    copy.parent.mkdir()
    copy.write_text((tmp_path / "test_liveid_to_gallery_2.json").read_text())
    with pytest.raises(DiscoveryError, match="two candidates for the test_gallery file") as err:
        find_lpr4m_files(tmp_path)
    assert str(tmp_path / "test_liveid_to_gallery_2.json") in str(err.value)
    assert str(copy) in str(err.value)
    assert err.value.kind == "test_gallery"
    assert err.value.paths == [copy, tmp_path / "test_liveid_to_gallery_2.json"]
    again = pickle.loads(pickle.dumps(err.value))  # crosses a process boundary intact
    assert (again.kind, again.paths, str(again)) == (err.value.kind, err.value.paths, str(err.value))


def test_videoinfo_parts_in_two_folders_are_two_candidates(tmp_path):
    write_world(tmp_path)
    (tmp_path / "more").mkdir()
    (tmp_path / "training_videoinfo_full_part_01.txt").rename(tmp_path / "more" / "training_videoinfo_full_part_01.txt")
    with pytest.raises(DiscoveryError, match="two candidates for the videoinfo file") as err:
        find_lpr4m_files(tmp_path)
    assert err.value.paths == [tmp_path / "training_videoinfo_full_part_00.txt",
                               tmp_path / "more" / "training_videoinfo_full_part_01.txt"]


def test_hidden_folders_are_not_searched(tmp_path):
    write_world(tmp_path)
    hidden = tmp_path / ".git" / "test_liveid_to_gallery_2.json"
    hidden.parent.mkdir()
    hidden.write_text("{}")
    assert find_lpr4m_files(tmp_path)["test_gallery"] == [tmp_path / "test_liveid_to_gallery_2.json"]


def test_find_one_refuses_missing_and_multi_part_kinds(tmp_path):
    write_world(tmp_path)
    find_one(tmp_path, "test_titles").unlink()
    with pytest.raises(FileNotFoundError, match="no test_titles file"):
        find_one(tmp_path, "test_titles")
    with pytest.raises(ValueError, match="may come in parts"):
        find_one(tmp_path, "videoinfo")


def test_inspect_reads_a_release_unpacked_into_sub_folders(tmp_path, capsys):
    world = write_world(tmp_path)
    _unpack(tmp_path, RELEASE_LAYOUT)
    assert cli.main(["inspect", str(tmp_path), "--strict"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}: 11 LPR4M file(s)" in out
    assert f"train/training_frame_url_{len(world.train_frame_urls)}.txt  [train_frame_urls]" in out
    assert "test/annotations/test_liveid_to_gallery_2.json  [test_gallery]  rows=6 ok=6 rejected=0" in out
    assert "total: 0 row(s) rejected, 0 file(s) unreadable" in out

    (tmp_path / "test_liveid_to_gallery_2.json").write_text("{}")  # a second gallery file
    assert cli.main(["inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "two candidates for the test_gallery file" in err
    assert "test/annotations/test_liveid_to_gallery_2.json" in err
