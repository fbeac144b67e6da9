"""``training_videoinfo``: a streaming parser to Arrow record batches, in one or more processes.

A row has 11 tab-separated columns (see ``VIDEOINFO_COLUMNS``); columns 2 and 3 are serialized
lists: the clip's frame ids, and per frame a list of ``[x1, y1, x2, y2]`` boxes. A real part file
holds ~400k rows of ~118 frame ids each (~3.5 GB), so the parser

- streams the file in byte ranges (:mod:`.lines`), optionally spread over worker processes;
- has a **bulk fast path** with no per-frame Python work: each row is screened with C-level bytes
  operations (the frame cell must be exactly ``['<clip_id>-NNNN', ...]``, Python or JSON
  quoting, which proves every frame belongs to the row's clip; the box cell may hold only
  numbers, brackets, commas and spaces), then for ~1000 rows at once the frame indices come
  from one numpy gather and the boxes from one Arrow JSON read;
- has a **per-row fast path** (numpy template check, ``json.loads`` of the boxes) for the rows of
  a sub-batch that the bulk path declined;
- has a **general path** for everything else: ``json.loads``, then ``ast.literal_eval`` (never
  ``eval``: a cell holding code is a syntax error, never run), then per-item validation that names
  the fault.

The fast paths only ever *accept*: whenever unsure they hand the row to the general path, which
alone decides to reject and why. So strict/lenient behaviour, reasons and output are the same with
``fast=False`` (tests check this on hand-made and on randomly mutated rows).

Accepted values: type codes as digits or names (``0`` or ``small``, see ``SCALE_TYPES``...),
``category_id`` an integer in ``[0, 32767]``, boxes of four finite numbers (after the cast to
float32). A row is rejected for: a wrong column count, invalid UTF-8, an invalid id, an unparsable
or wrongly shaped list, a frame id of another clip, a duplicate frame, an empty frame list, a box
list whose length differs from the frame list, an unknown type code.
"""

from __future__ import annotations

import ast
import io
import json
import multiprocessing
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
from tqdm import tqdm

from lpr_core.formats.lines import CHUNK_BYTES, RowReject, decode_line, plan_ranges, read_range
from lpr_core.formats.report import Reject, RowSink
from lpr_core.formats.schema import (
    DURATION_TYPES,
    NUMBER_TYPES,
    SCALE_TYPES,
    VIDEOINFO_COLUMNS,
    VIDEOINFO_SCHEMA,
)
from lpr_core.ids import ClipId, InvalidIdError, parse_clip_id, parse_frame_id, parse_image_id

__all__ = ["parse_videoinfo_line", "iter_videoinfo_batches", "N_COLUMNS"]

N_COLUMNS = len(VIDEOINFO_COLUMNS)
MAX_CATEGORY_ID = 32767

_CATEGORY_RE = re.compile(r"[0-9]{1,5}\Z")
_TYPE_COLUMNS = {8: SCALE_TYPES, 9: DURATION_TYPES, 10: NUMBER_TYPES}
# code or name -> code, e.g. {"0": 0, "small": 0, ...}
_TYPE_LOOKUP = {
    i: {**{str(k): k for k in table}, **{v: k for k, v in table.items()}}
    for i, table in _TYPE_COLUMNS.items()
}
# a box list on the fast path holds only numbers, brackets, commas and spaces
_BOX_CHARS = b"0123456789.eE+-[], "
_json_decode = json.JSONDecoder().decode  # json.loads without its per-call argument handling
#: Largest box value kept: the float32 range (a larger value would become inf).
MAX_BOX_VALUE = float(np.finfo(np.float32).max)
_DIGIT_WEIGHTS = np.array([1000, 100, 10, 1], dtype=np.uint16)
_EMPTY_BOXES = np.empty((0, 4), dtype=np.float32)
_EMPTY_U16 = np.empty(0, dtype=np.uint16)


def _col(i: int) -> str:
    return f"column {i + 1} ({VIDEOINFO_COLUMNS[i]})"


def _short(value: object, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


# --------------------------------------------------------------------------------------- scalars


def _video_id(text: str):
    try:
        return parse_clip_id(text)
    except InvalidIdError as exc:
        raise RowReject(f"{_col(0)}: {exc}") from None


def _rest(cols: list[str]) -> tuple:
    """Columns 4..11 (``cols`` holds exactly those 8) -> the row's scalar values."""
    image_id, title, category_id, category_name, asr, scale, duration, number = cols
    try:
        parse_image_id(image_id)
    except InvalidIdError as exc:
        raise RowReject(f"{_col(3)}: {exc}") from None
    if not _CATEGORY_RE.match(category_id) or int(category_id) > MAX_CATEGORY_ID:
        raise RowReject(f"{_col(5)}: {_short(category_id)} is not an integer in [0, {MAX_CATEGORY_ID}]")
    codes = []
    for i, text in zip((8, 9, 10), (scale, duration, number)):
        code = _TYPE_LOOKUP[i].get(text)
        if code is None:
            allowed = ", ".join(f"{k}={v}" for k, v in _TYPE_COLUMNS[i].items())
            raise RowReject(f"{_col(i)}: {_short(text)} is not a known code ({allowed})")
        codes.append(code)
    return (image_id, title, int(category_id), category_name, asr, *codes)


def _duplicate_reason(idx: np.ndarray) -> str | None:
    if len(idx) < 2 or (idx[1:] > idx[:-1]).all():  # increasing: the usual order, no duplicate
        return None
    order = np.sort(idx)
    dup = order[1:][order[1:] == order[:-1]]
    if len(dup):
        return f"{_col(1)}: frame index {int(dup[0]):04d} appears more than once"
    return None


# ---------------------------------------------------------------------------------- general path


def _literal(text: str, i: int) -> object:
    """Parse a list cell: JSON first, then a Python literal (safely: never evaluated as code)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(text)
    except Exception as exc:  # literal_eval raises ValueError, SyntaxError, TypeError, MemoryError...
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise RowReject(f"{_col(i)}: not a list literal ({type(exc).__name__}: {_short(msg, 60)})") from None


def _frames_general(text: str, clip_id: str) -> np.ndarray:
    obj = _literal(text, 1)
    if not isinstance(obj, list | tuple):
        raise RowReject(f"{_col(1)}: expected a list of frame ids, got {type(obj).__name__}")
    if not obj:
        raise RowReject(f"{_col(1)}: empty frame list")
    idx = np.empty(len(obj), dtype=np.uint16)
    for k, item in enumerate(obj):
        if not isinstance(item, str):
            raise RowReject(f"{_col(1)}: item {k} is a {type(item).__name__}, not a frame id string")
        try:
            frame = parse_frame_id(item)
        except InvalidIdError as exc:
            raise RowReject(f"{_col(1)}: item {k}: {exc}") from None
        if frame.clip_id != clip_id:
            raise RowReject(f"{_col(1)}: frame id {item!r} does not belong to clip {clip_id}")
        idx[k] = frame.index
    reason = _duplicate_reason(idx)
    if reason:
        raise RowReject(reason)
    return idx


def _boxes_general(text: str, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    obj = _literal(text, 2)
    if not isinstance(obj, list | tuple):
        raise RowReject(f"{_col(2)}: expected a list of per-frame box lists, got {type(obj).__name__}")
    if len(obj) != n_frames:
        raise RowReject(f"{_col(2)}: {len(obj)} per-frame box lists for {n_frames} frame ids")
    counts = np.zeros(n_frames, dtype=np.int64)
    flat: list[list[float]] = []
    for k, frame_boxes in enumerate(obj):
        if not isinstance(frame_boxes, list | tuple):
            raise RowReject(
                f"{_col(2)}: frame {k}: expected a list of boxes, got {type(frame_boxes).__name__}"
            )
        for box in frame_boxes:
            if not isinstance(box, list | tuple) or len(box) != 4:
                raise RowReject(
                    f"{_col(2)}: frame {k}: a box must be [x1, y1, x2, y2], got {_short(box, 60)}"
                )
            for v in box:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise RowReject(f"{_col(2)}: frame {k}: box value {_short(v, 40)} is not a number")
            try:
                flat.append([float(v) for v in box])
            except OverflowError:
                raise RowReject(f"{_col(2)}: frame {k}: box value out of range") from None
        counts[k] = len(frame_boxes)
    boxes = _to_float32(np.array(flat, dtype=np.float64).reshape(-1, 4))
    if boxes is None:
        raise RowReject(f"{_col(2)}: box value not finite (nan, inf, or beyond the float32 range)")
    return counts, boxes


def _to_float32(boxes64: np.ndarray) -> np.ndarray | None:
    """float64 boxes -> float32, or None when a value is nan, inf or beyond the float32 range."""
    if boxes64.size and not np.abs(boxes64).max() <= MAX_BOX_VALUE:  # nan fails the comparison too
        return None
    return boxes64.astype(np.float32)


def _row_general(line: bytes) -> tuple:
    text = decode_line(line)
    cols = text.split("\t")
    if len(cols) != N_COLUMNS:
        raise RowReject(f"expected {N_COLUMNS} tab-separated columns, got {len(cols)}")
    clip = _video_id(cols[0])
    idx = _frames_general(cols[1], cols[0])
    counts, boxes = _boxes_general(cols[2], len(idx))
    return (cols[0], clip, idx, counts, boxes, *_rest(cols[3:]))


# ------------------------------------------------------------------------------------- fast path


# every digit -> "0": the frame cell, so translated, must equal a template built by repetition
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")


def _frames_shape(cell: bytes, clip: bytes) -> tuple[int, int, int] | None:
    """``(n, head, width)`` when ``cell`` is exactly ``['<clip>-NNNN', ...]`` (or ``"``-quoted), else None.

    Shape check: with all digits mapped to 0, the cell must equal ``[`` + n copies of the item
    template (``'<clip>-0000'``) joined by ``, `` + ``]``. Then each item's text before its index has
    the clip's shape; that it *is* the clip follows from finding ``'<clip>-`` exactly n times (an
    occurrence can only start at an item's opening quote). All C-level bytes operations. Item k
    starts at byte ``1 + k * width``; its 4 digits at ``k * width + head + 1``.
    """
    size = len(cell)
    if size < 2:
        return None
    quote = cell[1:2]
    if quote != b"'" and quote != b'"':
        return None
    head = len(clip) + 2  # quote, clip id, dash
    width = head + 4 + 1 + 2  # ... 4 digits, quote, ", "
    if size % width:  # "[" + n items + (n - 1) separators + "]" is n * width bytes
        return None
    n = size // width
    item = quote + clip.translate(_ZERO_DIGITS) + b"-0000" + quote
    if cell.translate(_ZERO_DIGITS) != b"[" + (item + b", ") * (n - 1) + item + b"]":
        return None
    if cell.count(quote + clip + b"-") != n:
        return None
    return n, head, width


def _frames_fast(cell: bytes, clip: bytes) -> np.ndarray | None:
    """The frame indices of a cell that passes :func:`_frames_shape`, else None."""
    shape = _frames_shape(cell, clip)
    if shape is None:
        return None
    n, head, width = shape
    rows = np.frombuffer(cell, dtype=np.uint8).reshape(n, width)
    return (rows[:, head + 1 : head + 5] - np.uint8(48)).astype(np.uint16) @ _DIGIT_WEIGHTS


def _boxes_fast(cell: bytes, n_frames: int) -> tuple[object, np.ndarray] | None:
    if cell == b"[" + b"[], " * (n_frames - 1) + b"[]]":  # no box at all: the common case
        return [0] * n_frames, _EMPTY_BOXES
    if cell.translate(None, _BOX_CHARS):  # something else than digits, brackets, commas, spaces
        return None
    obj = _json_decode(cell.decode("ascii"))
    if type(obj) is not list or len(obj) != n_frames:
        return None
    counts = list(map(len, obj))  # TypeError (-> general path) when an entry is not a list
    flat = list(chain.from_iterable(obj))
    if not flat:
        return counts, _EMPTY_BOXES
    boxes64 = np.array(flat, dtype=np.float64)
    if boxes64.shape != (len(flat), 4):
        return None
    boxes = _to_float32(boxes64)
    if boxes is None:
        return None
    return counts, boxes


def _row_fast(line: bytes) -> tuple | None:
    try:
        cols = line.split(b"\t")
        if len(cols) != N_COLUMNS:
            return None
        video_id = cols[0].decode("utf-8")
        clip = parse_clip_id(video_id)
        idx = _frames_fast(cols[1], cols[0])
        if idx is None or _duplicate_reason(idx):
            return None
        parsed = _boxes_fast(cols[2], len(idx))
        if parsed is None:
            return None
        rest = _rest([c.decode("utf-8") for c in cols[3:]])
    except Exception:  # anything unexpected: the general path decides, and names the reason
        return None
    return (video_id, clip, idx, parsed[0], parsed[1], *rest)


def parse_videoinfo_line(line: bytes, fast: bool = True) -> tuple:
    """Parse one ``training_videoinfo`` line (without its newline).

    Args:
        line: the raw bytes of the line.
        fast: try the fast path first (the result is the same either way).

    Returns:
        ``(clip_id, ClipId, frame_indices uint16[n], boxes_per_frame int64[n], boxes float32[k, 4],
        image_id, image_title, category_id, category_name, asr, scale_type, duration_type,
        number_type)``.

    Raises:
        RowReject: the row is malformed; ``.reason`` says why.
    """
    if fast:
        row = _row_fast(line)
        if row is not None:
            return row
    return _row_general(line)


# ------------------------------------------------------------------------------------ batches


def _list_array(arrays: list[np.ndarray], values: pa.Array) -> pa.ListArray:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


def _build_batch(rows: list[tuple]) -> pa.RecordBatch:
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=VIDEOINFO_SCHEMA)
    cols = list(zip(*rows))
    clips = cols[1]
    frames = cols[2]
    box_frames = [np.repeat(idx, counts) for idx, counts in zip(frames, cols[3])]
    boxes = cols[4]
    frame_values = np.concatenate(frames) if frames else _EMPTY_U16
    box_frame_values = np.concatenate(box_frames) if box_frames else _EMPTY_U16
    box_values = np.concatenate(boxes).reshape(-1) if boxes else np.empty(0, np.float32)
    box_array = pa.FixedSizeListArray.from_arrays(pa.array(box_values, type=pa.float32()), 4)
    arrays = [
        pa.array(cols[0], type=pa.string()),
        pa.array([c.live_id for c in clips], type=pa.string()),
        pa.array([c.start_ms for c in clips], type=pa.int64()),
        pa.array([c.end_ms for c in clips], type=pa.int64()),
        _list_array(list(frames), pa.array(frame_values, type=pa.uint16())),
        _list_array(box_frames, pa.array(box_frame_values, type=pa.uint16())),
        _list_array(list(boxes), box_array),
        pa.array(cols[5], type=pa.string()),
        pa.array(cols[6], type=pa.string()),
        pa.array(cols[7], type=pa.int16()),
        pa.array(cols[8], type=pa.string()),
        pa.array(cols[9], type=pa.string()),
        pa.array(cols[10], type=pa.int8()),
        pa.array(cols[11], type=pa.int8()),
        pa.array(cols[12], type=pa.int8()),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=VIDEOINFO_SCHEMA)


# ------------------------------------------------------------------------------ bulk fast path
#
# Rows are first screened one by one with C-level bytes operations only (_screen); the frame
# indices and boxes of a sub-batch of screened rows are then extracted at once: indices with one
# numpy gather over the concatenated frame cells, boxes with one Arrow JSON read of the box cells.
# If anything in a sub-batch is not exactly as expected, the sub-batch goes row by row through
# parse_videoinfo_line, which alone rejects, so the outcome is the same as without the bulk path.

_SUB_BATCH = 1024
_BOXES_JSON_SCHEMA = pa.schema([("b", pa.list_(pa.list_(pa.list_(pa.float64()))))])


class _Screened(NamedTuple):
    line_no: int
    start: int  # the line is data[start:end] of its range
    end: int
    video_id: str
    clip: ClipId
    frames: bytes  # the frame cell, shape-checked
    n: int
    head: int
    width: int
    boxes: bytes | None  # the box cell (numbers and brackets only); None when no frame has a box
    rest: tuple


def _screen(data: bytes, line_no: int, start: int, end: int) -> _Screened | None:
    """Screen the line ``data[start:end]`` for the bulk path (columns are sliced out of ``data``
    directly: the ~10 KB line is not copied first)."""
    try:
        t1 = data.find(b"\t", start, end)
        t2 = data.find(b"\t", t1 + 1, end)
        t3 = data.find(b"\t", t2 + 1, end)
        if t1 < 0 or t2 < 0 or t3 < 0:
            return None
        rest_cols = data[t3 + 1 : end].split(b"\t")
        if len(rest_cols) != N_COLUMNS - 3:
            return None
        vid = data[start:t1]
        video_id = vid.decode("utf-8")
        clip = parse_clip_id(video_id)
        frames = data[t1 + 1 : t2]
        shape = _frames_shape(frames, vid)
        if shape is None:
            return None
        n, head, width = shape
        boxes: bytes | None = data[t2 + 1 : t3]
        if boxes == b"[" + b"[], " * (n - 1) + b"[]]":
            boxes = None
        elif boxes.translate(None, _BOX_CHARS):
            return None
        rest = _rest([c.decode("utf-8") for c in rest_cols])
    except Exception:
        return None
    return _Screened(line_no, start, end, video_id, clip, frames, n, head, width, boxes, rest)


def _offsets(lengths: np.ndarray) -> pa.Array:
    out = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=out[1:])
    return pa.array(out, type=pa.int32())


def _bulk_boxes(cells: list[bytes], ns: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-frame box counts (concatenated over rows) and float32 boxes of box cells, or None."""
    data = b"".join([b'{"b":' + c + b"}\n" for c in cells])
    try:
        table = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pj.ParseOptions(explicit_schema=_BOXES_JSON_SCHEMA),
        )
    except (pa.ArrowException, ValueError):
        return None
    rows = table.column(0).combine_chunks()
    if len(rows) != len(cells) or rows.null_count:
        return None
    frames = rows.flatten()
    boxes = frames.flatten()
    values = boxes.flatten()
    if frames.null_count or boxes.null_count or values.null_count:
        return None
    o1, o2, o3 = (np.asarray(a.offsets) for a in (rows, frames, boxes))
    if not np.array_equal(np.diff(o1), ns) or (np.diff(o3) != 4).any():
        return None
    boxes32 = _to_float32(values.to_numpy().reshape(-1, 4))
    if boxes32 is None:
        return None
    return np.diff(o2), boxes32


def _bulk_block(rows: list[_Screened]) -> pa.RecordBatch | None:
    """The record batch of screened rows, or None when a row needs the per-row path."""
    r = len(rows)
    ns = np.array([c.n for c in rows], dtype=np.int64)
    first = np.zeros(r, dtype=np.int64)
    np.cumsum(ns[:-1], out=first[1:])
    total = int(first[-1] + ns[-1])
    cell_len = np.array([len(c.frames) for c in rows], dtype=np.int64)
    cell_start = np.zeros(r, dtype=np.int64)
    np.cumsum(cell_len[:-1], out=cell_start[1:])
    item_row = np.repeat(np.arange(r), ns)
    item_k = np.arange(total) - first[item_row]
    widths = np.array([c.width for c in rows], dtype=np.int64)
    heads = np.array([c.head for c in rows], dtype=np.int64)
    pos = cell_start[item_row] + item_k * widths[item_row] + heads[item_row] + 1
    buf = np.frombuffer(b"".join([c.frames for c in rows]), dtype=np.uint8)
    idx = (buf[pos[:, None] + np.arange(4)] - np.uint8(48)).astype(np.uint16) @ _DIGIT_WEIGHTS
    if total > 1:  # increasing within each row: then no duplicate (else the per-row path decides)
        up = idx[1:] > idx[:-1]
        up[first[1:] - 1] = True
        if not up.all():
            return None
    counts = np.zeros(total, dtype=np.int64)
    boxed = [i for i, c in enumerate(rows) if c.boxes is not None]
    boxes32 = _EMPTY_BOXES
    if boxed:
        parsed = _bulk_boxes([rows[i].boxes for i in boxed], ns[boxed])
        if parsed is None:
            return None
        frame_counts, boxes32 = parsed
        is_boxed = np.zeros(r, dtype=bool)
        is_boxed[boxed] = True
        counts[np.repeat(is_boxed, ns)] = frame_counts
    row_boxes = np.add.reduceat(counts, first)
    rest = list(zip(*[c.rest for c in rows]))
    arrays = [
        pa.array([c.video_id for c in rows], type=pa.string()),
        pa.array([c.clip.live_id for c in rows], type=pa.string()),
        pa.array([c.clip.start_ms for c in rows], type=pa.int64()),
        pa.array([c.clip.end_ms for c in rows], type=pa.int64()),
        pa.ListArray.from_arrays(_offsets(ns), pa.array(idx, type=pa.uint16())),
        pa.ListArray.from_arrays(_offsets(row_boxes), pa.array(np.repeat(idx, counts), type=pa.uint16())),
        pa.ListArray.from_arrays(
            _offsets(row_boxes),
            pa.FixedSizeListArray.from_arrays(pa.array(boxes32.reshape(-1), type=pa.float32()), 4),
        ),
        pa.array(rest[0], type=pa.string()),
        pa.array(rest[1], type=pa.string()),
        pa.array(rest[2], type=pa.int16()),
        pa.array(rest[3], type=pa.string()),
        pa.array(rest[4], type=pa.string()),
        pa.array(rest[5], type=pa.int8()),
        pa.array(rest[6], type=pa.int8()),
        pa.array(rest[7], type=pa.int8()),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=VIDEOINFO_SCHEMA)


@dataclass
class _RangeResult:
    batch: pa.RecordBatch
    n_lines: int  # physical lines that start in the range
    n_rows: int  # non-empty lines (rows read)
    rejects: list[Reject] = field(default_factory=list)  # line numbers relative to the range


def parse_range(task: tuple[str, int, int, bool, bool]) -> _RangeResult:
    """Parse the lines that start in one byte range (runs in a worker process).

    ``task`` is ``(path, start, end, stop_at_first_reject, fast)``. Rejects carry line numbers
    relative to the range; the caller makes them absolute. With ``stop_at_first_reject`` parsing
    stops at the first bad line (strict mode).
    """
    path, start, end, stop_at_first, fast = task
    data = read_range(path, start, end)
    batches: list[pa.RecordBatch] = []
    rows: list[tuple] = []  # per-row results not yet in `batches`
    screened: list[_Screened] = []  # rows waiting for the bulk path
    rejects: list[Reject] = []

    def one_row(line_no: int, line: bytes) -> bool:  # False: stop here
        try:
            rows.append(parse_videoinfo_line(line, fast))
        except RowReject as exc:
            rejects.append(Reject.make(path, line_no, exc.reason, line))
            return not stop_at_first
        return True

    def flush() -> bool:  # False: stop here
        if not screened:
            return True
        try:
            block = _bulk_block(screened)
        except Exception:  # anything unexpected: row by row
            block = None
        todo = list(screened)
        screened.clear()
        if block is not None:
            if rows:
                batches.append(_build_batch(rows))
                rows.clear()
            batches.append(block)
            return True
        return all(one_row(c.line_no, data[c.start : c.end]) for c in todo)

    n_rows = n_lines = 0
    size = len(data)
    pos = 0
    while pos < size:
        nl = data.find(b"\n", pos)
        if nl < 0:
            nl = size
        line_start, line_end, pos = pos, nl, nl + 1
        n_lines += 1
        if line_end > line_start and data[line_end - 1] == 0x0D:  # CRLF
            line_end -= 1
        if line_end == line_start:
            continue
        n_rows += 1
        candidate = _screen(data, n_lines, line_start, line_end) if fast else None
        if candidate is not None:
            screened.append(candidate)
            if len(screened) >= _SUB_BATCH and not flush():
                break
            continue
        if not flush() or not one_row(n_lines, data[line_start:line_end]):
            break
    else:
        flush()
    if rows:
        batches.append(_build_batch(rows))
    batch = pa.concat_batches(batches) if batches else _build_batch([])
    if pos < size:  # stopped early (strict): the range's line count is not needed any more
        n_lines += data.count(b"\n", pos)
    return _RangeResult(batch, n_lines, n_rows, rejects)


def _ordered_window(pool, tasks: list, window: int) -> Iterator[_RangeResult]:
    """``pool.imap(parse_range, tasks)`` with at most ``window`` results in flight (bounded memory)."""
    queue: deque = deque()
    todo = iter(tasks)
    for task in islice(todo, window):
        queue.append(pool.apply_async(parse_range, (task,)))
    while queue:
        result = queue.popleft().get()
        task = next(todo, None)
        if task is not None:
            queue.append(pool.apply_async(parse_range, (task,)))
        yield result


def iter_videoinfo_batches(
    paths: list[Path],
    sink: RowSink,
    *,
    workers: int = 1,
    fast: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Yield ``VIDEOINFO_SCHEMA`` batches of the files, in file and line order.

    Args:
        paths: training_videoinfo part files, read in this order.
        sink: receives row counts and rejects (raises :class:`FormatError` when strict).
        workers: processes parsing byte ranges in parallel (1: in this process).
        fast: use the fast path (results are identical without it, only slower).
        chunk_bytes: size of a byte range; bounds memory per worker.
        progress: show a progress bar over bytes.
    """
    ranges = plan_ranges(list(paths), chunk_bytes)
    tasks = [(p, s, e, sink.strict, fast) for p, s, e in ranges]
    line_base: dict[str, int] = {}
    bar = None
    if progress:
        bar = tqdm(total=sum(e - s for _, s, e in ranges), unit="B", unit_scale=True, desc="videoinfo")
    pool = None
    try:
        if workers > 1 and len(tasks) > 1:
            # never plain fork: a caller with threads (Airflow, MLflow, torch) can leave a lock held in
            # the child and deadlock it; forkserver forks from a clean single-threaded server
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            _build_batch([])  # pyarrow's one-time lazy imports happen here, not once per worker
            pool = multiprocessing.get_context(method).Pool(min(workers, len(tasks)))
            results = _ordered_window(pool, tasks, window=2 * workers)
        else:
            results = map(parse_range, tasks)
        for (path, start, end, _, _), res in zip(tasks, results):
            base = line_base.get(path, 0)
            sink.read(res.n_rows)
            for r in res.rejects:
                sink.reject(r.file, base + r.line, r.reason, r.raw)
            line_base[path] = base + res.n_lines
            if bar is not None:
                bar.update(end - start)
            if res.batch.num_rows:
                yield res.batch
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()
