"""training_videoinfo: round trips, bad rows (strict and lenient), fast path == general path."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from lpr_core.formats import writers
from lpr_core.formats.lines import RowReject
from lpr_core.formats.readers import FormatError, read_videoinfo
from lpr_core.formats.schema import REJECTS_SCHEMA, VIDEOINFO_SCHEMA
from lpr_core.formats.videoinfo import parse_videoinfo_line

from .helpers import expected_videoinfo, make_rows

ROWS = make_rows(8, seed=3)


def _line(row) -> str:
    return writers.format_videoinfo_row(row)


def _write_lines(path, lines, *, newline="\n", bom=False, encoding="utf-8"):
    data = b"".join((ln if isinstance(ln, bytes) else ln.encode(encoding)) + newline.encode() for ln in lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


# ------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fast", [True, False])
def test_writer_to_reader_round_trip(tmp_path, fast):
    path = writers.write_videoinfo(tmp_path / "training_videoinfo_1.txt", ROWS)
    table, report = read_videoinfo(path, fast=fast, strict=True)
    assert table.schema.equals(VIDEOINFO_SCHEMA)
    assert table.to_pylist() == expected_videoinfo(ROWS)
    assert (report.rows_read, report.rows_rejected, report.rejects) == (len(ROWS), 0, [])


@pytest.mark.parametrize("fast", [True, False])
def test_json_list_syntax_round_trip(tmp_path, fast):
    path = writers.write_videoinfo(tmp_path / "training_videoinfo_1.txt", ROWS, list_syntax="json")
    first = path.read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
    assert json.loads(first[1]) == ROWS[0].frame_ids and first[1].startswith('["')
    table, report = read_videoinfo(path, fast=fast, strict=True)
    assert table.to_pylist() == expected_videoinfo(ROWS)
    assert report.rows_rejected == 0
    with pytest.raises(ValueError, match="list_syntax must be one of python, json"):
        writers.format_videoinfo_row(ROWS[0], list_syntax="yaml")


def test_integer_boxes_and_many_frames_round_trip(tmp_path):
    rows = make_rows(5, seed=9, max_frames=300, float_boxes=False)
    path = writers.write_videoinfo(tmp_path / "training_videoinfo_1.txt", rows)
    table, _ = read_videoinfo(path, strict=True)
    assert table.to_pylist() == expected_videoinfo(rows)


def test_parts_are_read_in_order_from_a_glob_or_a_list(tmp_path):
    writers.write_videoinfo(tmp_path / "training_videoinfo_part_01.txt", ROWS[4:])
    writers.write_videoinfo(tmp_path / "training_videoinfo_part_00.txt", ROWS[:4])
    by_glob, report = read_videoinfo(str(tmp_path / "training_videoinfo_part_*.txt"))
    assert by_glob.to_pylist() == expected_videoinfo(ROWS)
    assert [p.rsplit("/", 1)[-1] for p in report.files] == [
        "training_videoinfo_part_00.txt",
        "training_videoinfo_part_01.txt",
    ]
    by_list, _ = read_videoinfo(
        [tmp_path / "training_videoinfo_part_01.txt", tmp_path / "training_videoinfo_part_00.txt"]
    )
    assert by_list.to_pylist() == expected_videoinfo(ROWS[4:] + ROWS[:4])


def test_missing_file_or_empty_glob_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_videoinfo(tmp_path / "training_videoinfo_nope.txt")
    with pytest.raises(FileNotFoundError):
        read_videoinfo(str(tmp_path / "training_videoinfo_*.txt"))


def _json_line(row) -> str:
    cols = _line(row).split("\t")
    cols[1] = json.dumps(row.frame_ids)
    cols[2] = json.dumps([[list(b) for b in fb] for fb in row.boxes])
    return "\t".join(cols)


@pytest.mark.parametrize(
    "variant",
    [
        _json_line,  # JSON syntax (double quotes)
        lambda r: "\t".join(  # compact JSON
            [c.replace(", ", ",") if k in (1, 2) else c for k, c in enumerate(_json_line(r).split("\t"))]
        ),
        lambda r: _line(r).replace("[", " [", 1),  # a leading space in the frame cell
        lambda r: "\t".join(  # Python tuples
            [
                *_line(r).split("\t")[:2],
                repr([[tuple(b) for b in fb] for fb in r.boxes]),
                *_line(r).split("\t")[3:],
            ]
        ),
        lambda r: "\t".join(  # names instead of type codes
            [
                *_line(r).split("\t")[:8],
                ["small", "medium", "large"][r.scale_type],
                ["short", "medium", "long"][r.duration_type],
                ["single", "multiple"][r.number_type],
            ]
        ),
    ],
    ids=["json", "compact-json", "leading-space", "tuples", "type-names"],
)
@pytest.mark.parametrize("fast", [True, False])
def test_other_valid_spellings_give_the_same_table(tmp_path, variant, fast):
    path = _write_lines(tmp_path / "training_videoinfo_1.txt", [variant(r) for r in ROWS])
    table, report = read_videoinfo(path, strict=True, fast=fast)
    assert report.rows_rejected == 0
    assert table.to_pylist() == expected_videoinfo(ROWS)


# -------------------------------------------------------------------------------- bad rows

CLIP = ROWS[0].video_id
OTHER_CLIP = ROWS[1].video_id


def _with(col: int, value: str, row=ROWS[0]) -> str:
    cols = _line(row).split("\t")
    cols[col] = value
    return "\t".join(cols)


def _boxes(spec: str, n: int | None = None, row=ROWS[0]) -> str:
    """Column 3 with ``spec`` as the first frame's entry and [] for the others."""
    n = len(row.frame_ids) if n is None else n
    return _with(2, "[" + ", ".join([spec] + ["[]"] * (n - 1)) + "]", row)


ROW0_FRAMES = ROWS[0].frame_ids

BAD_LINES = {
    "ten-columns": ("\t".join(_line(ROWS[0]).split("\t")[:10]), "expected 11 tab-separated columns, got 10"),
    "twelve-columns": (_line(ROWS[0]) + "\textra", "expected 11 tab-separated columns, got 12"),
    "unparsable-frames": (_with(1, "['" + ROW0_FRAMES[0]), "column 2 (frame_ids): not a list literal"),
    "unparsable-boxes": (_with(2, "[[1, 2, 3, 4]"), "column 3 (boxes): not a list literal"),
    "frames-not-a-list": (
        _with(1, "{'a': 1}"),
        "column 2 (frame_ids): expected a list of frame ids, got dict",
    ),
    "frame-not-a-string": (_with(1, "[1, 2]"), "item 0 is a int, not a frame id string"),
    "video-id-dotdot": (_with(0, "../" + CLIP), "column 1 (video_id): invalid clip_id"),
    "frame-id-dotdot": (
        _with(1, str(["../" + f for f in ROW0_FRAMES])),
        "column 2 (frame_ids): item 0: invalid frame_id",
    ),
    "frame-id-slash": (
        _with(1, str([f.replace("-", "/", 1) for f in ROW0_FRAMES])),
        "contains a path separator",
    ),
    "image-id-dotdot": (_with(3, "../" + ROWS[0].image_id), "column 4 (image_id): invalid image_id"),
    "frame-of-another-clip": (
        _with(1, str([f"{OTHER_CLIP}-0001"] + ROW0_FRAMES[1:])),
        f"does not belong to clip {CLIP}",
    ),
    "duplicate-frame": (_with(1, str([ROW0_FRAMES[0]] * len(ROW0_FRAMES))), "appears more than once"),
    "empty-frames": (
        _with(2, "[]", row=ROWS[0]).replace(_line(ROWS[0]).split("\t")[1], "[]", 1),
        "empty frame list",
    ),
    "boxes-too-short": (
        _boxes("[]", len(ROW0_FRAMES) + 1),
        f"{len(ROW0_FRAMES) + 1} per-frame box lists for",
    ),
    "box-three-values": (_boxes("[[1, 2, 3]]"), "a box must be [x1, y1, x2, y2]"),
    "box-flat": (_boxes("[1, 2, 3, 4]"), "a box must be [x1, y1, x2, y2]"),
    "box-string-value": (_boxes("[['1', 2, 3, 4]]"), "is not a number"),
    "box-bool-value": (_boxes("[[True, 2, 3, 4]]"), "is not a number"),
    "box-json-true": (_boxes("[[true, 2, 3, 4]]"), "is not a number"),
    "box-nan": (_boxes("[[NaN, 2, 3, 4]]"), "not finite"),
    "box-beyond-float32": (_boxes("[[1e39, 2, 3, 4]]"), "not finite"),
    "box-huge-int": (_boxes("[[" + "9" * 400 + ", 2, 3, 4]]"), "box value out of range"),
    "frame-entry-not-a-list": (_boxes("None"), "expected a list of boxes, got NoneType"),
    "scale-type-3": (_with(8, "3"), "column 9 (scale_type): '3' is not a known code"),
    "duration-type-neg": (_with(9, "-1"), "column 10 (duration_type): '-1' is not a known code"),
    "number-type-2": (_with(10, "2"), "column 11 (number_type): '2' is not a known code"),
    "number-type-name": (_with(10, "large"), "column 11 (number_type)"),
    "category-not-int": (_with(5, "abc"), "column 6 (category_id)"),
    "category-too-big": (_with(5, "40000"), "column 6 (category_id)"),
    "category-negative": (_with(5, "-1"), "column 6 (category_id)"),
}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_row_is_rejected_with_its_line_and_reason(tmp_path, case, fast):
    bad, reason = BAD_LINES[case]
    lines = [_line(ROWS[1]), _line(ROWS[2]), bad, _line(ROWS[3])]
    path = _write_lines(tmp_path / "training_videoinfo_1.txt", lines)

    table, report = read_videoinfo(path, fast=fast)
    assert table.to_pylist() == expected_videoinfo([ROWS[1], ROWS[2], ROWS[3]])
    assert (report.rows_read, report.rows_rejected, report.rows_ok) == (4, 1, 3)
    (reject,) = report.rejects
    assert (reject.file, reject.line) == (str(path), 3)
    assert reason in reject.reason
    assert reject.raw == bad[:997] + "..." if len(bad) > 1000 else reject.raw == bad
    assert report.rejects_table().schema.equals(REJECTS_SCHEMA)

    with pytest.raises(FormatError) as exc:
        read_videoinfo(path, strict=True, fast=fast)
    assert (exc.value.path, exc.value.line) == (str(path), 3)
    assert reason in exc.value.reason
    assert f"{path}:3:" in str(exc.value)


@pytest.mark.parametrize("column", [1, 2])
@pytest.mark.parametrize("fast", [True, False])
def test_code_in_a_list_cell_is_rejected_and_never_run(tmp_path, column, fast):
    sentinel = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {sentinel}')"
    for cell in (payload, f"[{payload}]", f"[x for x in [{payload}]]"):
        path = _write_lines(tmp_path / "training_videoinfo_1.txt", [_line(ROWS[1]), _with(column, cell)])
        table, report = read_videoinfo(path, fast=fast)
        assert table.num_rows == 1
        assert report.rejects[0].line == 2
        assert "not a list literal" in report.rejects[0].reason
        with pytest.raises(FormatError):
            read_videoinfo(path, strict=True, fast=fast)
    assert not sentinel.exists()


@pytest.mark.parametrize("fast", [True, False])
def test_invalid_utf8_rejects_the_line_and_names_it(tmp_path, fast):
    good = _line(ROWS[1])
    cols = _line(ROWS[2]).encode("utf-8").split(b"\t")
    cols[7] = b"\xff\xfe" + cols[7]  # in the asr column
    bad = b"\t".join(cols)
    path = _write_lines(tmp_path / "training_videoinfo_1.txt", [good, bad, _line(ROWS[3])])
    table, report = read_videoinfo(path, fast=fast)
    assert table.num_rows == 2
    (reject,) = report.rejects
    assert reject.line == 2 and reject.reason.startswith("invalid UTF-8 at byte")
    assert "\\xff\\xfe" in reject.raw  # the bytes are shown, escaped
    with pytest.raises(FormatError, match=r":2: invalid UTF-8"):
        read_videoinfo(path, strict=True, fast=fast)


def test_lenient_collects_every_bad_row_strict_stops_at_the_first(tmp_path):
    cases = ["ten-columns", "box-nan", "scale-type-3"]
    lines = []
    for k, case in enumerate(cases):
        lines += [_line(ROWS[k + 1]), BAD_LINES[case][0]]
    path = _write_lines(tmp_path / "training_videoinfo_1.txt", lines)
    table, report = read_videoinfo(path)
    assert table.num_rows == 3
    assert [r.line for r in report.rejects] == [2, 4, 6]
    assert [BAD_LINES[c][1] in r.reason for c, r in zip(cases, report.rejects)] == [True] * 3
    with pytest.raises(FormatError) as exc:
        read_videoinfo(path, strict=True)
    assert exc.value.line == 2


# --------------------------------------------------------------------------- file encodings


def test_empty_file_gives_an_empty_table(tmp_path):
    path = tmp_path / "training_videoinfo_1.txt"
    path.write_bytes(b"")
    table, report = read_videoinfo(path, strict=True)
    assert table.num_rows == 0 and table.schema.equals(VIDEOINFO_SCHEMA)
    assert report.rows_read == 0


@pytest.mark.parametrize("fast", [True, False])
def test_bom_crlf_blank_lines_and_missing_final_newline(tmp_path, fast):
    lines = [_line(r) for r in ROWS[:3]]
    data = b"\xef\xbb\xbf" + b"\r\n".join(
        ln.encode() for ln in [lines[0], "", lines[1], "", BAD_LINES["box-nan"][0], lines[2]]
    )
    path = tmp_path / "training_videoinfo_1.txt"
    path.write_bytes(data)  # no final newline
    table, report = read_videoinfo(path, fast=fast)
    assert table.to_pylist() == expected_videoinfo(ROWS[:3])
    assert report.rows_read == 4  # blank lines are not rows
    assert [r.line for r in report.rejects] == [5]  # physical line numbers
    assert not report.rejects[0].raw.endswith("\r")


def test_bom_only_counts_at_the_start_of_the_file(tmp_path):
    path = _write_lines(tmp_path / "training_videoinfo_1.txt", [_line(ROWS[0]), "\ufeff" + _line(ROWS[1])])
    table, report = read_videoinfo(path)
    assert table.num_rows == 1
    assert report.rejects[0].line == 2 and "column 1 (video_id)" in report.rejects[0].reason


# ------------------------------------------------------------------- workers and byte ranges


def test_workers_and_small_ranges_give_identical_results(tmp_path):
    rows = make_rows(60, seed=11, max_frames=40)
    lines = [_line(r) for r in rows]
    bad_at = {5: "box-nan", 23: "ten-columns", 41: "frame-of-another-clip", 59: "scale-type-3"}
    for k, case in bad_at.items():
        lines[k] = BAD_LINES[case][0]
    lines.insert(30, "")  # a blank line shifts the following line numbers
    path = _write_lines(tmp_path / "training_videoinfo_1.txt", lines, newline="\r\n")
    ref_table, ref = read_videoinfo(path)
    expected_lines = [k + 1 + (k >= 30) for k in sorted(bad_at)]
    assert [r.line for r in ref.rejects] == expected_lines
    good = [r for k, r in enumerate(rows) if k not in bad_at]
    assert ref_table.to_pylist() == expected_videoinfo(good)
    for workers, chunk in [(1, 3000), (2, 3000), (2, 1 << 20)]:
        table, report = read_videoinfo(path, workers=workers, chunk_bytes=chunk)
        assert table.equals(ref_table), (workers, chunk)
        assert report.rejects == ref.rejects
        assert (report.rows_read, report.rows_rejected) == (ref.rows_read, ref.rows_rejected)
    with pytest.raises(FormatError) as exc:
        read_videoinfo(path, strict=True, workers=2, chunk_bytes=3000)
    assert exc.value.line == expected_lines[0]


# ---------------------------------------------------------------- fast path == general path


def _outcome(line: bytes, fast: bool):
    try:
        row = parse_videoinfo_line(line, fast=fast)
    except RowReject as exc:
        return ("reject", exc.reason)
    return tuple(x.tolist() if isinstance(x, np.ndarray) else x for x in row)


def _mutations(line: str, rng: random.Random, n: int):
    alphabet = list("[]'\", 0123456789.-eE+\\/ab()") + ["\t", "  ", "-0001", "'", "], [", "[[", "]]"]
    for _ in range(n):
        chars = list(line)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.4:
                chars[pos] = rng.choice(alphabet)
            elif op < 0.7:
                chars.insert(pos, rng.choice(alphabet))
            else:
                del chars[pos]
        yield "".join(chars)


def test_fast_path_accepts_exactly_what_the_general_path_accepts():
    rng = random.Random(0)
    rows = make_rows(6, seed=21, max_frames=5)
    differences = []
    n_accepted = 0
    for row in rows:
        line = _line(row)
        cut = line.index("\t", line.index("\t", line.index("\t") + 1) + 1)
        for mutated in _mutations(line[:cut], rng, 250):  # mutate the id and the two list columns
            raw = (mutated + line[cut:]).encode()
            fast, general = _outcome(raw, True), _outcome(raw, False)
            n_accepted += fast[0] != "reject"
            if fast != general:
                differences.append((mutated, fast, general))
    assert differences == []
    assert 0 < n_accepted < 6 * 250  # both outcomes were exercised


def test_files_of_mutated_rows_read_the_same_with_and_without_the_fast_paths(tmp_path, monkeypatch):
    from lpr_core.formats import videoinfo

    monkeypatch.setattr(videoinfo, "_SUB_BATCH", 7)  # several sub-batches, some with a bad row
    rng = random.Random(1)
    rows = make_rows(40, seed=31, max_frames=6)
    lines = []
    for row in rows:
        line = _line(row)
        cut = line.index("\t", line.index("\t", line.index("\t") + 1) + 1)
        lines.append(line)
        if rng.random() < 0.5:
            lines.append(next(_mutations(line[:cut], rng, 1)) + line[cut:])
    path = _write_lines(tmp_path / "training_videoinfo_1.txt", lines)
    fast_table, fast = read_videoinfo(path, fast=True)
    slow_table, slow = read_videoinfo(path, fast=False)
    assert fast_table.equals(slow_table)
    assert fast.rejects == slow.rejects
    assert 0 < fast.rows_rejected < len(lines) - len(rows)  # some mutations stay valid, most do not


def test_canonical_rows_never_take_the_per_row_path(tmp_path, monkeypatch):
    from lpr_core.formats import videoinfo

    calls = []
    per_row = videoinfo.parse_videoinfo_line
    monkeypatch.setattr(
        videoinfo, "parse_videoinfo_line", lambda line, fast=True: calls.append(1) or per_row(line, fast)
    )
    rows = make_rows(30, seed=41, max_frames=50)
    path = writers.write_videoinfo(tmp_path / "training_videoinfo_1.txt", rows)
    table, _ = read_videoinfo(path)
    assert table.to_pylist() == expected_videoinfo(rows)
    assert calls == []  # all through the bulk path
    _write_lines(path, [_line(r) for r in rows[:10]] + [BAD_LINES["box-three-values"][0]])
    table, report = read_videoinfo(path)
    assert table.num_rows == 10 and report.rejects[0].line == 11
    assert len(calls) == 11  # the sub-batch holding the bad row went row by row
