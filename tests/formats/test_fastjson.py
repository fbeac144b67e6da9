"""The fast path of the frame boxes reader: the same table on good files, the slow path on any fault."""

from __future__ import annotations

import json

import pytest

from lpr_core.formats.fastjson import frame_boxes_batch
from lpr_core.formats.readers import FormatError, read_frame_boxes

from .helpers import write_world

LIVE = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
CLIP = f"{LIVE}-1000-2000"
FRAME = f"{CLIP}-0003"


def _write(tmp_path, text: str | bytes, name: str = "test_frameid2gtbox_1_3.json"):
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def test_world_file_takes_the_fast_path_with_the_slow_paths_table(tmp_path):
    world = write_world(tmp_path)
    path = world.path("test_frame_boxes")
    batch = frame_boxes_batch(path)
    assert batch is not None and batch.num_rows == len(world.frame_boxes) > 0
    fast, fast_report = read_frame_boxes(path)
    slow, slow_report = read_frame_boxes(path, fast=False)
    assert fast.equals(slow) and fast.schema.equals(slow.schema)
    assert fast_report.summary() == slow_report.summary()


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "\ufeff" + json.dumps({FRAME: [[1, 2.5, 3, 4e2]], f"{CLIP}-0004": []}),
        json.dumps({FRAME: [[0, 0, 1, 1], [-1.25, 2, 3.5, 3.4028234663852886e38]]}, indent=2)
        .replace("\n", "\r\n"),
        json.dumps({f"{LIVE}-5-5-9999": [[1, 1, 2, 2]], f"{LIVE.upper()}-0-0-0000": [[1, 2, 3, 4]]}),
    ],
)
def test_good_files_give_the_same_table_both_ways(tmp_path, text):
    path = _write(tmp_path, text)
    assert frame_boxes_batch(path) is not None
    fast, fast_report = read_frame_boxes(path, strict=True)
    slow, slow_report = read_frame_boxes(path, strict=True, fast=False)
    assert fast.equals(slow) and fast.schema.equals(slow.schema)
    assert fast_report.rows_read == slow_report.rows_read == fast.num_rows


BAD_ENTRIES = {
    "three-values": ("[[1, 2, 3]]", "box 0: expected [x1, y1, x2, y2]"),
    "flat-box": ("[1, 2, 3, 4]", "got number"),
    "string-value": ('[[1, 2, 3, "4"]]', "is not a number"),
    "string-box": ('["1234"]', "box 0: expected [x1, y1, x2, y2], got string"),
    "string-boxes": ('"1234"', "expected a list of boxes, got string"),
    "bool": ("[[1, 2, 3, true]]", "is not a number"),
    "null-value": ("[[1, 2, null, 4]]", "is not a number"),
    "null-boxes": ("null", "got null"),
    "nan": ("[[1, 2, 3, NaN]]", "not finite"),
    "infinity": ("[[1, 2, 3, -Infinity]]", "not finite"),
    "beyond-float32": ("[[1, 2, 3, 1e300]]", "not finite"),
    "huge-int": (f"[[1, 2, 3, {10**400}]]", "out of range"),
    "object": ('{"x": 1}', "expected a list of boxes, got object"),
    "object-box": ('[{"x": 1}]', "got object"),
    "empty-object": ("{}", "expected a list of boxes, got object"),
    "empty-object-box": ("[[1, 2, 3, 4], {}]", "box 1: expected [x1, y1, x2, y2], got object"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_a_bad_value_falls_back_and_is_reported_at_its_line(tmp_path, case):
    value, reason = BAD_ENTRIES[case]
    text = "{\n" + f'  "{FRAME}": [[1, 2, 3, 4]],\n  "{CLIP}-0004": {value},\n  "{CLIP}-0005": []\n' + "}\n"
    path = _write(tmp_path, text)
    assert frame_boxes_batch(path) is None
    table, report = read_frame_boxes(path)
    assert table.column("frame_index").to_pylist() == [3, 5]
    (reject,) = report.rejects
    assert reject.line == 3 and reason in reject.reason
    with pytest.raises(FormatError) as exc:
        read_frame_boxes(path, strict=True)
    assert exc.value.line == 3 and reason in exc.value.reason


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (f"../{FRAME}", "key: invalid frame_id"),
        (f"{FRAME}\n", "key: invalid frame_id"),
        (CLIP, "key: invalid frame_id"),
        (f"{LIVE}-3000-2000-0001", "start_ms after end_ms"),
        (f"{LIVE}-01-2000-0001", "key: invalid frame_id"),
        (FRAME, "duplicate key"),
    ],
)
def test_a_bad_or_duplicate_key_falls_back_and_is_reported_at_its_line(tmp_path, key, reason):
    text = "{\n" + f'  "{FRAME}": [],\n\n  {json.dumps(key)}: [[1, 2, 3, 4]]\n' + "}"
    path = _write(tmp_path, text)
    assert frame_boxes_batch(path) is None
    table, report = read_frame_boxes(path)
    assert table.num_rows == 1 and report.rows_read == 2
    (reject,) = report.rejects
    assert reject.line == 4 and reason in reject.reason


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (b'{\n"' + FRAME.encode() + b'": [[1, 2, 3, 4]],\n"\xff": []}', 3, "invalid UTF-8"),
        (f'[["{FRAME}", [[1, 2, 3, 4]]]]', 1, "expected a JSON object"),
        (f'{{"{FRAME}": [[1, 2, 3, 4]]\n}}\n{{}}', 3, "extra data"),
        (f'{{"{FRAME}": [[1, 2, 3, 4]],\n}}', 2, "expected a string key"),
    ],
)
def test_file_level_faults_still_raise_with_their_line(tmp_path, text, line, reason):
    path = _write(tmp_path, text)
    assert frame_boxes_batch(path) is None
    with pytest.raises(FormatError) as exc:
        read_frame_boxes(path)
    assert exc.value.line == line and reason in exc.value.reason
