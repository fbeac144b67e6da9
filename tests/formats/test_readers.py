"""URL lists, two-column TSVs and JSON files: round trips from the writers, and every kind of bad row."""

from __future__ import annotations

import json

import pytest

from lpr_core import ids
from lpr_core.formats import writers
from lpr_core.formats.readers import (
    KINDS,
    SCHEMAS,
    FormatError,
    find_lpr4m_files,
    read_frame_boxes,
    read_frame_urls,
    read_gt_images,
    read_image_titles,
    read_image_urls,
    read_kind,
    read_live_gallery,
    read_test_asr,
    scan,
)
from lpr_core.formats.schema import FILE_PATTERNS

from .helpers import IMG_PREFIX, PREFIX, expected_videoinfo, write_world

LIVE = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
CLIP = f"{LIVE}-1000-2000"
IMAGE = "11111111-2222-3333-4444-555555555555"
IMAGE2 = "11111111-2222-3333-4444-666666666666"


@pytest.fixture
def world(tmp_path):
    return write_world(tmp_path)


# ---------------------------------------------------------------------------- whole world


def test_every_kind_is_found_and_read_with_its_schema(world):
    found = find_lpr4m_files(world.root)
    assert sorted(found) == sorted(KINDS) == sorted(FILE_PATTERNS)
    assert len(found["videoinfo"]) == 2
    for kind, files in found.items():
        table, report = read_kind(kind, files, strict=True)
        assert table.schema.equals(SCHEMAS[kind]), kind
        assert report.rows_rejected == 0 and report.rows_ok == table.num_rows > 0, kind


def test_round_trips_match_what_was_written(world):
    def frame_rows(urls):
        return [
            {
                "url": u,
                "clip_id": ids.parse_frame_url(u)[1].clip_id,
                "frame_index": ids.parse_frame_url(u)[1].index,
            }
            for u in urls
        ]

    assert read_frame_urls(world.path("train_frame_urls")).table.to_pylist() == frame_rows(
        world.train_frame_urls
    )
    assert read_frame_urls(world.path("test_frame_urls")).table.to_pylist() == frame_rows(
        world.test_frame_urls
    )
    assert read_image_urls(world.path("test_image_urls")).table.to_pylist() == [
        {"url": u, "image_id": u[len(IMG_PREFIX) : -4]} for u in world.test_image_urls
    ]
    assert read_kind(
        "videoinfo", find_lpr4m_files(world.root)["videoinfo"]
    ).table.to_pylist() == expected_videoinfo(world.rows)
    assert read_test_asr(world.path("test_asr")).table.to_pylist() == [
        {"clip_id": k, "asr": " ".join(v.split())} for k, v in world.asr.items()
    ]
    assert read_image_titles(world.path("test_titles")).table.to_pylist() == [
        {"image_id": k, "title": v} for k, v in world.titles.items()
    ]
    assert read_gt_images(world.path("test_gt_images")).table.to_pylist() == [
        {"clip_id": k, "live_id": k[:36], "gt_image_ids": v} for k, v in world.gt.items()
    ]
    assert read_frame_boxes(world.path("test_frame_boxes")).table.to_pylist() == [
        {
            "clip_id": ids.parse_frame_id(k).clip_id,
            "frame_index": ids.parse_frame_id(k).index,
            "boxes": [list(b) for b in v],
        }
        for k, v in world.frame_boxes.items()
    ]
    assert read_live_gallery(world.path("test_gallery")).table.to_pylist() == [
        {"live_id": live, "image_id": i} for live, imgs in world.gallery.items() for i in imgs
    ]


def test_scan_reports_without_keeping_the_table(world):
    report = scan("train_frame_urls", world.path("train_frame_urls"))
    assert report.rows_read == len(world.train_frame_urls) and report.rows_rejected == 0


def test_unknown_kind_is_refused(world):
    with pytest.raises(ValueError, match="unknown LPR4M file kind"):
        read_kind("nope", world.path("test_asr"))


def test_find_refuses_a_missing_directory(tmp_path):
    with pytest.raises(NotADirectoryError):
        find_lpr4m_files(tmp_path / "nope")


# -------------------------------------------------------------------------------- URL lists

FRAME_URL = f"{PREFIX}{CLIP}-0007.jpg"

BAD_FRAME_URLS = {
    "dotdot-in-id": (f"{PREFIX}..%2F{CLIP}-0007.jpg", "invalid frame URL"),
    "backslash-in-id": (f"{PREFIX}..\\{CLIP}-0007.jpg", "path separator"),
    "not-jpg": (f"{PREFIX}{CLIP}-0007.png", "does not end with .jpg"),
    "index-3-digits": (f"{PREFIX}{CLIP}-007.jpg", "invalid frame URL"),
    "clip-not-frame": (f"{PREFIX}{CLIP}.jpg", "invalid frame URL"),
    "start-after-end": (f"{PREFIX}{LIVE}-3000-2000-0007.jpg", "start_ms after end_ms"),
    "space-inside": (f"{PREFIX}a b/{CLIP}-0007.jpg", "whitespace or a control character"),
    "trailing-space": (f"{FRAME_URL} ", "whitespace or a control character"),
    "tab-two-columns": (f"{FRAME_URL}\t{FRAME_URL}", "whitespace or a control character"),
    "image-url-in-frame-list": (f"{IMG_PREFIX}{IMAGE}.jpg", "invalid frame URL"),
}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("case", sorted(BAD_FRAME_URLS))
def test_bad_frame_url_is_rejected(tmp_path, case, fast):
    bad, reason = BAD_FRAME_URLS[case]
    path = tmp_path / "test_frame_url_3.txt"
    path.write_text(f"{FRAME_URL}\n{bad}\n{PREFIX}{CLIP}-0008.jpg\n", encoding="utf-8")
    table, report = read_frame_urls(path, fast=fast)
    assert table.column("frame_index").to_pylist() == [7, 8]
    assert table.column("clip_id").to_pylist() == [CLIP, CLIP]
    (reject,) = report.rejects
    assert reject.line == 2 and reason in reject.reason and reject.raw == bad
    with pytest.raises(FormatError) as exc:
        read_frame_urls(path, strict=True, fast=fast)
    assert (exc.value.path, exc.value.line) == (str(path), 2)


@pytest.mark.parametrize("fast", [True, False])
def test_url_list_encodings_and_line_numbers(tmp_path, fast):
    path = tmp_path / "test_image_url_9.txt"
    good = [f"{IMG_PREFIX}{IMAGE}.jpg", f"{IMG_PREFIX}{IMAGE2}.jpg"]
    path.write_bytes(
        b"\xef\xbb\xbf"
        + good[0].encode()
        + b"\r\n\r\n"
        + f"{IMG_PREFIX}{IMAGE}\xff.jpg".encode("latin-1")
        + b"\r\n"
        + f"{IMG_PREFIX}../{IMAGE}x.jpg\r\n".encode()
        + good[1].encode()
    )
    table, report = read_image_urls(path, fast=fast)
    assert table.to_pylist() == [{"url": good[0], "image_id": IMAGE}, {"url": good[1], "image_id": IMAGE2}]
    assert report.rows_read == 4
    assert [(r.line, r.reason.split(" at ")[0]) for r in report.rejects] == [
        (3, "invalid UTF-8"),
        (4, f"invalid image URL: '{IMG_PREFIX}../{IMAGE}x.jpg' (invalid image_id: '{IMAGE}x' (wrong shape))"),
    ]
    with pytest.raises(FormatError, match=":3: invalid UTF-8"):
        read_image_urls(path, strict=True, fast=fast)


def test_url_lists_stream_in_small_ranges_with_the_same_result(world):
    path = world.path("train_frame_urls")
    whole, _ = read_frame_urls(path)
    pieces, report = read_frame_urls(path, chunk_bytes=100)
    assert pieces.equals(whole) and report.rows_read == len(world.train_frame_urls)


def test_empty_url_list(tmp_path):
    path = tmp_path / "test_frame_url_0.txt"
    path.write_text("")
    table, report = read_frame_urls(path, strict=True)
    assert table.num_rows == 0 and table.schema.equals(SCHEMAS["test_frame_urls"]) and report.rows_read == 0


# ------------------------------------------------------------------------- two-column TSVs


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"{CLIP}", "expected 2 tab-separated columns, got 1"),
        (f"{CLIP}\tasr\textra", "expected 2 tab-separated columns, got 3"),
        (f"../{CLIP}\tasr", "column 1 (clip_id): invalid clip_id"),
        (f"{LIVE}\tasr", "column 1 (clip_id): invalid clip_id"),
        (f"{CLIP}\tagain", f"duplicate clip_id {CLIP} (first on line 1)"),
    ],
)
def test_bad_asr_rows(tmp_path, line, reason):
    path = tmp_path / "test_videoid_asr_2.txt"
    path.write_text(f"{CLIP}\t你好\n{line}\n{LIVE}-1-2\t\n", encoding="utf-8")
    table, report = read_test_asr(path)
    assert table.to_pylist() == [{"clip_id": CLIP, "asr": "你好"}, {"clip_id": f"{LIVE}-1-2", "asr": ""}]
    assert [r.line for r in report.rejects] == [2] and reason in report.rejects[0].reason
    with pytest.raises(FormatError) as exc:
        read_test_asr(path, strict=True)
    assert exc.value.line == 2 and exc.value.reason == report.rejects[0].reason


def test_titles_with_bom_crlf_and_invalid_utf8(tmp_path):
    path = tmp_path / "test_image_title_2.txt"
    path.write_bytes(
        b"\xef\xbb\xbf" + f"{IMAGE}\t标题\r\n".encode() + f"{IMAGE2}\t".encode() + b"\xe6\xa0\r\n" + b"\r\n"
    )
    table, report = read_image_titles(path)
    assert table.to_pylist() == [{"image_id": IMAGE, "title": "标题"}]
    assert report.rows_read == 2
    assert report.rejects[0].line == 2 and report.rejects[0].reason.startswith("invalid UTF-8 at byte 37")


def test_empty_title_file(tmp_path):
    path = tmp_path / "test_image_title_0.txt"
    path.write_bytes(b"")
    table, report = read_image_titles(path, strict=True)
    assert table.num_rows == 0 and report.rows_read == 0


# ----------------------------------------------------------------------------------- JSON


def _json_file(tmp_path, name, obj_text):
    path = tmp_path / name
    path.write_text(obj_text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (f'"../{CLIP}": ["{IMAGE}"]', "key: invalid clip_id"),
        (f'"{LIVE}": ["{IMAGE}"]', "key: invalid clip_id"),
        (f'"{LIVE}-1-2": ["../{IMAGE}"]', "item 0: invalid image_id"),
        (f'"{LIVE}-1-2": "{IMAGE}"', "expected a list of image_ids, got string"),
        (f'"{LIVE}-1-2": {{"a": 1}}', "expected a list of image_ids, got object"),
        (f'"{LIVE}-1-2": [1]', "item 0: expected a image_id string, got number"),
        (f'"{LIVE}-1-2": []', "empty list of ground-truth images"),
        (f'"{LIVE}-1-2": ["{IMAGE}", "{IMAGE}"]', "duplicate image_id"),
        (f'"{CLIP}": ["{IMAGE2}"]', "duplicate key"),
    ],
)
def test_bad_gt_entries_are_rejected_at_their_line(tmp_path, entry, reason):
    text = "{\n" + f'  "{CLIP}": ["{IMAGE}"],\n  {entry},\n  "{LIVE}-5-6": ["{IMAGE2}"]\n' + "}\n"
    path = _json_file(tmp_path, "test_videoid_to_gtimage_3.json", text)
    table, report = read_gt_images(path)
    assert table.column("clip_id").to_pylist() == [CLIP, f"{LIVE}-5-6"]
    assert table.column("gt_image_ids").to_pylist() == [[IMAGE], [IMAGE2]]
    (reject,) = report.rejects
    assert reject.line == 3 and reason in reject.reason
    assert json.loads(reject.raw)  # the entry, as JSON
    with pytest.raises(FormatError) as exc:
        read_gt_images(path, strict=True)
    assert exc.value.line == 3 and reason in exc.value.reason


FRAME = f"{CLIP}-0003"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[[1, 2, 3]]", "box 0: expected [x1, y1, x2, y2]"),
        ("[1, 2, 3, 4]", "box 0: expected [x1, y1, x2, y2], got number"),
        ('[[1, 2, 3, "4"]]', "is not a number"),
        ("[[1, 2, 3, true]]", "is not a number"),
        ("[[1, 2, 3, NaN]]", "not finite"),
        ("[[1, 2, 3, Infinity]]", "not finite"),
        ("[[1, 2, 3, 1e300]]", "not finite"),
        ('{"x": 1}', "expected a list of boxes, got object"),
        ("null", "expected a list of boxes, got null"),
    ],
)
def test_bad_frame_boxes_are_rejected(tmp_path, value, reason):
    text = json.dumps({FRAME: [[1, 2, 3, 4]]})[:-1] + f', "{CLIP}-0004": {value}, "{CLIP}-0005": []}}'
    path = _json_file(tmp_path, "test_frameid2gtbox_1_3.json", text)
    table, report = read_frame_boxes(path)
    assert table.to_pylist() == [
        {"clip_id": CLIP, "frame_index": 3, "boxes": [[1.0, 2.0, 3.0, 4.0]]},
        {"clip_id": CLIP, "frame_index": 5, "boxes": []},
    ]
    (reject,) = report.rejects
    assert reject.line == 1 and reason in reject.reason
    with pytest.raises(FormatError, match=reason.replace("[", r"\[")):
        read_frame_boxes(path, strict=True)


@pytest.mark.parametrize("key", [f"../{FRAME}", CLIP, f"{CLIP}-3", f"{FRAME}/x", f"{FRAME}\n"])
def test_bad_frame_ids_in_box_keys(tmp_path, key):
    path = _json_file(tmp_path, "test_frameid2gtbox_1_2.json", json.dumps({FRAME: [], key: []}))
    table, report = read_frame_boxes(path)
    assert table.num_rows == 1
    assert report.rejects[0].reason.startswith("key: invalid frame_id")


def test_gallery_rejects_pairs_and_entries(tmp_path):
    live2 = LIVE.replace("0a", "0b")
    text = json.dumps(
        {
            LIVE: [IMAGE, "../etc", IMAGE, IMAGE2],
            f"{LIVE}/..": [IMAGE],
            live2: [],
            LIVE.replace("0a", "0c"): "x",
        },
        indent=1,
    )
    path = _json_file(tmp_path, "test_liveid_to_gallery_4.json", text)
    table, report = read_live_gallery(path)
    assert table.to_pylist() == [{"live_id": LIVE, "image_id": IMAGE}, {"live_id": LIVE, "image_id": IMAGE2}]
    reasons = [(r.line, r.reason.split(": ")[0]) for r in report.rejects]
    assert [line for line, _ in reasons] == [2, 2, 8, 11, 12]
    assert "invalid image_id" in report.rejects[0].reason
    assert "duplicate image_id" in report.rejects[1].reason
    assert "invalid live_id" in report.rejects[2].reason
    assert "empty gallery" in report.rejects[3].reason
    assert "got string" in report.rejects[4].reason
    assert report.rows_read == table.num_rows + report.rows_rejected == 7


A = f'"{CLIP}": ["{IMAGE}"]'
B = f'"{LIVE}-5-6": ["{IMAGE2}"]'


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 0, "empty file"),
        ("   \n", 0, "empty file"),
        (f'["{IMAGE}"]', 1, "expected a JSON object of id -> value, got array"),
        ("null", 1, "got null"),
        ("{" + A[:-1] + ",\n 2", 2, "invalid JSON"),
        ("{" + A + "}\n{" + B + "}", 2, "extra data"),
        ("{" + A.replace(":", "") + "}", 1, "expected ':'"),
        ("{" + A.replace('"', "'") + "}", 1, "expected a string key"),
        ("{" + A + " " + B + "}", 1, "expected ',' or '}'"),
        ("{" + A + ",}", 1, "expected a string key"),
        ("{" + A + ",\n" + B.replace(f'["{IMAGE2}"]', '__import__("os")') + "}", 2, "invalid JSON"),
    ],
)
def test_json_file_level_faults_raise_in_both_modes(tmp_path, text, line, reason):
    path = _json_file(tmp_path, "test_videoid_to_gtimage_1.json", text)
    for strict in (False, True):
        with pytest.raises(FormatError) as exc:
            read_gt_images(path, strict=strict)
        assert exc.value.path == str(path) and exc.value.line == line and reason in exc.value.reason


def test_json_with_bom_and_invalid_utf8(tmp_path):
    path = tmp_path / "test_liveid_to_gallery_1.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({LIVE: [IMAGE]}).encode())
    assert read_live_gallery(path, strict=True).table.num_rows == 1
    path.write_bytes(b'{\n"' + LIVE.encode() + b'": ["\xff"]}')
    with pytest.raises(FormatError, match="invalid UTF-8") as exc:
        read_live_gallery(path)
    assert exc.value.line == 2


def test_empty_json_object_is_an_empty_table(tmp_path):
    path = _json_file(tmp_path, "test_frameid2gtbox_0_0.json", "{}")
    table, report = read_frame_boxes(path, strict=True)
    assert table.num_rows == 0 and table.schema.equals(SCHEMAS["test_frame_boxes"]) and report.rows_read == 0


def test_json_writers_round_trip_non_ascii_keys_are_refused(tmp_path):
    path = writers.write_gt_images(
        tmp_path / "test_videoid_to_gtimage_1.json", {f"{CLIP}é": [IMAGE], CLIP: [IMAGE]}
    )
    table, report = read_gt_images(path)
    assert table.column("clip_id").to_pylist() == [CLIP]
    assert report.rejects[0].reason.startswith("key: invalid clip_id")
