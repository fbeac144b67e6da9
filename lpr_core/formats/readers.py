"""Readers for every LPR4M file: each returns a ``pyarrow.Table`` with a schema of :mod:`.schema`.

| kind (``FILE_PATTERNS`` key) | file | schema |
| --- | --- | --- |
| ``train_frame_urls``, ``test_frame_urls`` | one frame URL per line | ``FRAME_URLS_SCHEMA`` |
| ``train_image_urls``, ``test_image_urls`` | one shop image URL per line | ``IMAGE_URLS_SCHEMA`` |
| ``videoinfo`` | training_videoinfo part files (11 columns) | ``VIDEOINFO_SCHEMA`` |
| ``test_asr`` | ``clip_id \\t asr`` | ``ASR_SCHEMA`` |
| ``test_titles`` | ``image_id \\t title`` | ``TITLE_SCHEMA`` |
| ``test_gt_images`` | JSON ``{clip_id: [image_id, ...]}`` | ``GT_IMAGES_SCHEMA`` |
| ``test_frame_boxes`` | JSON ``{frame_id: [[x1, y1, x2, y2], ...]}`` | ``FRAME_BOXES_SCHEMA`` |
| ``test_gallery`` | JSON ``{live_id: [image_id, ...]}`` | ``GALLERY_SCHEMA`` (one row per pair) |

Every reader takes one path, a glob pattern or a list of paths (read in order, as one table),
and ``strict``: in strict mode the first bad row raises :class:`FormatError` (``.path``,
``.line``, ``.reason``); in lenient mode (the default) bad rows are skipped and listed in the
returned :class:`ReadReport`. Readers return ``ReadResult(table, report)``.

Text files: a UTF-8 BOM and CRLF line ends are accepted, empty lines are skipped, a line that is
not valid UTF-8 is rejected. JSON files: an entry with a bad key or value is a rejected row (its
line is the line of its key); a file that is not a JSON object at all raises in both modes.
Duplicate keys are rejected (the first entry wins).

:func:`load_ground_truth` and :func:`load_galleries` give the evaluation the ground-truth and
gallery files as plain dicts, read strictly by the same readers.
"""

from __future__ import annotations

import glob as _glob
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lpr_core.formats.discovery import DiscoveryError, find_lpr4m_files
from lpr_core.formats.fastjson import frame_boxes_batch
from lpr_core.formats.lines import (
    BOM,
    CHUNK_BYTES,
    RowReject,
    decode_line,
    iter_lines,
    plan_ranges,
    read_range,
    split_lines,
)
from lpr_core.formats.report import FormatError, ReadReport, ReadResult, Reject, RowSink
from lpr_core.formats.schema import (
    ASR_SCHEMA,
    FILE_PATTERNS,
    FRAME_BOXES_SCHEMA,
    FRAME_URLS_SCHEMA,
    GALLERY_SCHEMA,
    GT_IMAGES_SCHEMA,
    IMAGE_URLS_SCHEMA,
    TITLE_SCHEMA,
    VIDEOINFO_SCHEMA,
)
from lpr_core.formats.videoinfo import _to_float32, iter_videoinfo_batches
from lpr_core.ids import (
    _MS,
    _UUID,
    InvalidIdError,
    parse_clip_id,
    parse_frame_id,
    parse_frame_url,
    parse_image_id,
    parse_image_url,
    parse_live_id,
)

__all__ = [
    "FormatError",
    "DiscoveryError",
    "Reject",
    "ReadReport",
    "ReadResult",
    "SCHEMAS",
    "KINDS",
    "expand_paths",
    "find_lpr4m_files",
    "iter_batches",
    "read_kind",
    "scan",
    "read_frame_urls",
    "read_image_urls",
    "read_videoinfo",
    "read_test_asr",
    "read_image_titles",
    "read_gt_images",
    "read_frame_boxes",
    "read_live_gallery",
    "load_ground_truth",
    "load_galleries",
]

PathsLike = str | Path | Iterable[str | Path]

#: kind -> the schema of its table.
SCHEMAS: dict[str, pa.Schema] = {
    "train_frame_urls": FRAME_URLS_SCHEMA,
    "train_image_urls": IMAGE_URLS_SCHEMA,
    "test_frame_urls": FRAME_URLS_SCHEMA,
    "test_image_urls": IMAGE_URLS_SCHEMA,
    "videoinfo": VIDEOINFO_SCHEMA,
    "test_asr": ASR_SCHEMA,
    "test_titles": TITLE_SCHEMA,
    "test_gt_images": GT_IMAGES_SCHEMA,
    "test_frame_boxes": FRAME_BOXES_SCHEMA,
    "test_gallery": GALLERY_SCHEMA,
}
KINDS = tuple(FILE_PATTERNS)
_BATCH_ROWS = 65536


# ---------------------------------------------------------------------------------------- paths


def expand_paths(paths: PathsLike) -> list[Path]:
    """One path, a glob pattern, or a list of either -> existing file paths (globs sorted).

    Raises:
        FileNotFoundError: a path does not exist or a pattern matches nothing.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_file():
            out.append(p)
            continue
        if _glob.has_magic(str(item)):
            matches = sorted(Path(m) for m in _glob.glob(str(item)) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(f"no file matches {item}")
            out.extend(matches)
            continue
        raise FileNotFoundError(f"no such file: {item}")
    return out


# ------------------------------------------------------------------------------------ URL lists

_CONTROL = r"[\x00-\x20\x7f]"  # the same class in Python re and in Arrow's RE2
_CONTROL_RE = re.compile(_CONTROL)
# a search, not a full match: the id right after the last "/" (or at the start), up to the end.
# Ids hold no "/", so this accepts what ``^(?:.*/)?<id>\.jpg$`` accepts, at a third of the cost
_FRAME_URL_RE2 = rf"(?:^|/)(?P<clip_id>{_UUID}-(?P<start>{_MS})-(?P<end>{_MS}))-(?P<index>[0-9]{{4}})\.jpg$"
_IMAGE_URL_RE2 = rf"(?:^|/)(?P<image_id>{_UUID})\.jpg$"


def _frame_url_row(url: str) -> tuple:
    if _CONTROL_RE.search(url):
        raise RowReject("URL contains whitespace or a control character")
    try:
        _, frame = parse_frame_url(url)
    except InvalidIdError as exc:
        raise RowReject(str(exc)) from None
    return (url, frame.clip_id, frame.index)


def _image_url_row(url: str) -> tuple:
    if _CONTROL_RE.search(url):
        raise RowReject("URL contains whitespace or a control character")
    try:
        _, image_id = parse_image_url(url)
    except InvalidIdError as exc:
        raise RowReject(str(exc)) from None
    return (url, image_id)


def _decode_chunk(data: bytes) -> tuple[list[str | None], list[bytes] | None]:
    """Lines of a chunk as str, None for a line that is not UTF-8 (then its bytes are returned too)."""
    try:
        lines: list[str | None] = list(data.decode("utf-8").split("\n"))
    except UnicodeDecodeError:
        raw = split_lines(data)
        decoded: list[str | None] = []
        for b in raw:
            try:
                decoded.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                decoded.append(None)
        return decoded, raw
    if lines and lines[-1] == "":
        lines.pop()
    return lines, None


def _strip_cr(lines: list[str | None]) -> list[str | None]:
    return [s[:-1] if s is not None and s.endswith("\r") else s for s in lines]


def _iter_url_batches(
    paths: list[Path], sink: RowSink, *, image: bool, chunk_bytes: int = CHUNK_BYTES, fast: bool = True
) -> Iterator[pa.RecordBatch]:
    schema = IMAGE_URLS_SCHEMA if image else FRAME_URLS_SCHEMA
    pattern = _IMAGE_URL_RE2 if image else _FRAME_URL_RE2
    slow_row = _image_url_row if image else _frame_url_row
    line_base: dict[str, int] = {}
    for path, start, end in plan_ranges(paths, chunk_bytes):
        data = read_range(path, start, end)
        base = line_base.get(path, 0)
        lines, raw = _decode_chunk(data)
        line_base[path] = base + len(lines)
        if b"\r" in data:
            lines = _strip_cr(lines)
        keep = [k for k, s in enumerate(lines) if s != ""]  # empty lines are not rows
        if not keep:
            continue
        sink.read(len(keep))
        if len(keep) != len(lines):
            lines = [lines[k] for k in keep]
            raw = [raw[k] for k in keep] if raw is not None else None
        linenos = np.asarray(keep, dtype=np.int64) + base + 1
        arr = pa.array(lines, type=pa.string())
        if fast:
            parts = pc.extract_regex(arr, pattern=pattern)
            ok = pc.and_kleene(parts.is_valid(), pc.invert(pc.match_substring_regex(arr, _CONTROL)))
            if not image:
                starts = pc.cast(pc.struct_field(parts, "start"), pa.int64())
                ends = pc.cast(pc.struct_field(parts, "end"), pa.int64())
                ok = pc.and_kleene(ok, pc.less_equal(starts, ends))
            ok_np = ok.fill_null(False).to_numpy(zero_copy_only=False)
        else:
            ok_np = np.zeros(len(lines), dtype=bool)
        good = pa.array(ok_np)
        if image:
            fast_cols = [arr.filter(good), pc.struct_field(parts, "image_id").filter(good)] if fast else None
        else:
            fast_cols = (
                [
                    arr.filter(good),
                    pc.struct_field(parts, "clip_id").filter(good),
                    pc.cast(pc.struct_field(parts, "index").filter(good), pa.uint16()),
                ]
                if fast
                else None
            )
        # the general path decides about every row the fast path did not accept
        slow_rows: list[tuple] = []
        slow_lines: list[int] = []
        for k in np.flatnonzero(~ok_np):
            k = int(k)
            try:
                text = lines[k]
                if text is None:
                    decode_line(raw[k])  # raises with the offending byte
                slow_rows.append(slow_row(text))
                slow_lines.append(int(linenos[k]))
            except RowReject as exc:
                sink.reject(path, int(linenos[k]), exc.reason, raw[k] if text is None else text)
        batch_cols = fast_cols if fast_cols is not None else [pa.array([], f.type) for f in schema]
        batch = pa.RecordBatch.from_arrays(batch_cols, schema=schema)
        if slow_rows:
            extra = pa.RecordBatch.from_arrays(
                [pa.array(list(c), type=f.type) for c, f in zip(zip(*slow_rows), schema)], schema=schema
            )
            table = pa.Table.from_batches([batch, extra])
            order = np.concatenate([linenos[ok_np], np.asarray(slow_lines, dtype=np.int64)])
            table = table.take(pa.array(np.argsort(order, kind="stable")))
            yield from table.combine_chunks().to_batches()
        elif batch.num_rows:
            yield batch


# --------------------------------------------------------------------------------- two-column TSV


def _iter_tsv2_batches(
    paths: list[Path], sink: RowSink, *, key_name: str, parse_key: Callable[[str], object], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    for path in paths:
        seen: dict[str, int] = {}
        keys: list[str] = []
        values: list[str] = []
        for lineno, raw in iter_lines(path):
            sink.read()
            try:
                text = decode_line(raw)
                cols = text.split("\t")
                if len(cols) != 2:
                    raise RowReject(f"expected 2 tab-separated columns, got {len(cols)}")
                key, value = cols
                try:
                    parse_key(key)
                except InvalidIdError as exc:
                    raise RowReject(f"column 1 ({key_name}): {exc}") from None
                if key in seen:
                    raise RowReject(f"duplicate {key_name} {key} (first on line {seen[key]})")
            except RowReject as exc:
                sink.reject(str(path), lineno, exc.reason, raw)
                continue
            seen[key] = lineno
            keys.append(key)
            values.append(value)
            if len(keys) >= _BATCH_ROWS:
                yield pa.RecordBatch.from_arrays(
                    [pa.array(keys, pa.string()), pa.array(values, pa.string())], schema=schema
                )
                keys, values = [], []
        if keys:
            yield pa.RecordBatch.from_arrays(
                [pa.array(keys, pa.string()), pa.array(values, pa.string())], schema=schema
            )


# ------------------------------------------------------------------------------------------ JSON


class _Object(list):
    """A JSON object kept as its (key, value) pairs, so that duplicate keys are seen."""


_WS = re.compile(r"[ \t\n\r]*")


class _Lines:
    """Line numbers of increasing character offsets, counted incrementally."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.line = text, 0, 1

    def at(self, pos: int) -> int:
        if pos < self.pos:
            self.pos, self.line = 0, 1
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _json_type(value: object) -> str:
    if isinstance(value, _Object):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "string"


def _plain(value: object) -> object:
    if isinstance(value, _Object):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _iter_json_entries(path: Path) -> Iterator[tuple[str, object, int]]:
    """Yield ``(key, value, line)`` of a top-level JSON object, in file order, duplicates included."""
    data = path.read_bytes()
    if data.startswith(BOM):
        data = data[len(BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(
            str(path), data.count(b"\n", 0, exc.start) + 1, f"invalid UTF-8 at byte {exc.start}"
        ) from None
    lines = _Lines(text)
    decoder = json.JSONDecoder(object_pairs_hook=_Object)

    def fail(pos: int, msg: str) -> FormatError:
        return FormatError(str(path), lines.at(pos), msg)

    try:
        pos = _WS.match(text, 0).end()
        if pos == len(text):
            raise FormatError(str(path), 0, "empty file: expected a JSON object")
        if text[pos] != "{":
            try:
                what = _json_type(decoder.raw_decode(text, pos)[0])
            except ValueError:
                what = "invalid JSON"
            raise fail(pos, f"expected a JSON object of id -> value, got {what}")
        pos = _WS.match(text, pos + 1).end()
        if text.startswith("}", pos):
            pos += 1
        else:
            while True:
                if not text.startswith('"', pos):
                    raise fail(pos, "invalid JSON: expected a string key")
                key_pos = pos
                key, pos = json.decoder.scanstring(text, pos + 1, True)
                pos = _WS.match(text, pos).end()
                if not text.startswith(":", pos):
                    raise fail(pos, "invalid JSON: expected ':'")
                pos = _WS.match(text, pos + 1).end()
                value, pos = decoder.raw_decode(text, pos)
                yield key, value, lines.at(key_pos)
                pos = _WS.match(text, pos).end()
                if text.startswith(",", pos):
                    pos = _WS.match(text, pos + 1).end()
                elif text.startswith("}", pos):
                    pos += 1
                    break
                else:
                    raise fail(pos, "invalid JSON: expected ',' or '}'")
        pos = _WS.match(text, pos).end()
        if pos != len(text):
            raise fail(pos, "invalid JSON: extra data after the object")
    except json.JSONDecodeError as exc:
        raise FormatError(str(path), exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise FormatError(str(path), 0, "invalid JSON: nested too deeply") from None


def _id_list(value: object, what: str, parse: Callable[[str], object]) -> list[str]:
    if not isinstance(value, list) or isinstance(value, _Object):
        raise RowReject(f"expected a list of {what}s, got {_json_type(value)}")
    seen: set[str] = set()
    for k, item in enumerate(value):
        if not isinstance(item, str):
            raise RowReject(f"item {k}: expected a {what} string, got {_json_type(item)}")
        try:
            parse(item)
        except InvalidIdError as exc:
            raise RowReject(f"item {k}: {exc}") from None
        if item in seen:
            raise RowReject(f"item {k}: duplicate {what} {item}")
        seen.add(item)
    return value


def _box_list(value: object) -> np.ndarray:
    if not isinstance(value, list) or isinstance(value, _Object):
        raise RowReject(f"expected a list of boxes, got {_json_type(value)}")
    out = np.empty((len(value), 4), dtype=np.float64)
    for k, box in enumerate(value):
        if not isinstance(box, list) or isinstance(box, _Object) or len(box) != 4:
            raise RowReject(
                f"box {k}: expected [x1, y1, x2, y2], got {_json_type(box)} {str(_plain(box))[:60]}"
            )
        for j, v in enumerate(box):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise RowReject(f"box {k}: value {str(_plain(v))[:40]} is not a number")
            try:
                out[k, j] = float(v)
            except OverflowError:
                raise RowReject(f"box {k}: value out of range") from None
    boxes = _to_float32(out)
    if boxes is None:
        raise RowReject("box value not finite (nan, inf, or beyond the float32 range)")
    return boxes


def _iter_json_batches(paths: list[Path], sink: RowSink, kind: str, *, fast: bool = True) -> Iterator[pa.RecordBatch]:
    schema = SCHEMAS[kind]
    for path in paths:
        if fast and kind == "test_frame_boxes":
            # a file whose every entry is good, read at once; any fault: the entry-by-entry path below
            batch = frame_boxes_batch(path)
            if batch is not None:
                sink.read(batch.num_rows)
                yield batch
                continue
        seen: set[str] = set()
        rows: dict[str, list] = {name: [] for name in schema.names}
        for key, value, line in _iter_json_entries(path):
            try:
                if key in seen:
                    sink.read()
                    raise RowReject(f"duplicate key {key} (the first entry is kept)")
                seen.add(key)
                if kind == "test_gallery":
                    _json_gallery(key, value, rows, sink, path, line)
                    continue
                sink.read()
                if kind == "test_gt_images":
                    try:
                        clip = parse_clip_id(key)
                    except InvalidIdError as exc:
                        raise RowReject(f"key: {exc}") from None
                    images = _id_list(value, "image_id", parse_image_id)
                    if not images:
                        raise RowReject(f"{key}: empty list of ground-truth images")
                    rows["clip_id"].append(key)
                    rows["live_id"].append(clip.live_id)
                    rows["gt_image_ids"].append(images)
                else:  # test_frame_boxes
                    try:
                        frame = parse_frame_id(key)
                    except InvalidIdError as exc:
                        raise RowReject(f"key: {exc}") from None
                    boxes = _box_list(value)
                    rows["clip_id"].append(frame.clip_id)
                    rows["frame_index"].append(frame.index)
                    rows["boxes"].append(boxes)
            except RowReject as exc:
                sink.reject(str(path), line, exc.reason, json.dumps({key: _plain(value)}, ensure_ascii=False))
        yield _json_rows_batch(rows, schema)


def _json_gallery(key: str, value: object, rows: dict, sink: RowSink, path: Path, line: int) -> None:
    """Gallery rows are (live_id, image_id) pairs: a bad image drops its pair, a bad key the entry."""
    raw = json.dumps({key: _plain(value)}, ensure_ascii=False)
    try:
        parse_live_id(key)
    except InvalidIdError as exc:
        sink.read()
        raise RowReject(f"key: {exc}") from None
    if not isinstance(value, list) or isinstance(value, _Object):
        sink.read()
        raise RowReject(f"expected a list of image_ids, got {_json_type(value)}")
    if not value:
        sink.read()
        raise RowReject(f"{key}: empty gallery")
    seen: set[str] = set()
    for k, item in enumerate(value):
        sink.read()
        try:
            if not isinstance(item, str):
                raise RowReject(f"{key} item {k}: expected an image_id string, got {_json_type(item)}")
            try:
                parse_image_id(item)
            except InvalidIdError as exc:
                raise RowReject(f"{key} item {k}: {exc}") from None
            if item in seen:
                raise RowReject(f"{key} item {k}: duplicate image_id {item}")
        except RowReject as exc:
            sink.reject(str(path), line, exc.reason, raw)
            continue
        seen.add(item)
        rows["live_id"].append(key)
        rows["image_id"].append(item)


def _json_rows_batch(rows: dict[str, list], schema: pa.Schema) -> pa.RecordBatch:
    if "boxes" in rows:
        boxes = rows["boxes"]
        offsets = np.zeros(len(boxes) + 1, dtype=np.int32)
        np.cumsum([len(b) for b in boxes], out=offsets[1:])
        values = np.concatenate(boxes).reshape(-1) if boxes else np.empty(0, np.float32)
        box_col = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()),
            pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), 4),
        )
        cols = [pa.array(rows["clip_id"], pa.string()), pa.array(rows["frame_index"], pa.uint16()), box_col]
        return pa.RecordBatch.from_arrays(cols, schema=schema)
    return pa.RecordBatch.from_arrays([pa.array(rows[f.name], f.type) for f in schema], schema=schema)


# -------------------------------------------------------------------------------------- dispatch


def iter_batches(
    kind: str,
    paths: PathsLike,
    sink: RowSink,
    *,
    workers: int = 1,
    fast: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Stream the rows of LPR4M files of one ``kind`` as record batches of ``SCHEMAS[kind]``.

    Memory stays bounded by ``chunk_bytes`` (per worker) for the large kinds (URL lists,
    videoinfo); the JSON and two-column files are small and read whole.

    Args:
        kind: a ``FILE_PATTERNS`` key.
        paths: a path, a glob pattern or a list of paths.
        sink: receives counts and rejects; raises :class:`FormatError` in strict mode.
        workers: processes for ``videoinfo`` (others are read in this process).
        fast: use the vectorized fast paths (output is identical without): URL lists, videoinfo,
            and ``test_frame_boxes`` files whose every entry is good.
        chunk_bytes: the size of a byte range read at once.
        progress: show a progress bar (videoinfo).
    """
    if kind not in SCHEMAS:
        raise ValueError(f"unknown LPR4M file kind {kind!r}; expected one of {', '.join(SCHEMAS)}")
    files = expand_paths(paths)
    sink.report.files.extend(str(p) for p in files)
    if kind == "videoinfo":
        return iter_videoinfo_batches(
            files, sink, workers=workers, fast=fast, chunk_bytes=chunk_bytes, progress=progress
        )
    if kind.endswith("_urls"):
        return _iter_url_batches(files, sink, image="image" in kind, chunk_bytes=chunk_bytes, fast=fast)
    if kind == "test_asr":
        return _iter_tsv2_batches(files, sink, key_name="clip_id", parse_key=parse_clip_id, schema=ASR_SCHEMA)
    if kind == "test_titles":
        return _iter_tsv2_batches(
            files, sink, key_name="image_id", parse_key=parse_image_id, schema=TITLE_SCHEMA
        )
    return _iter_json_batches(files, sink, kind, fast=fast)


def read_kind(
    kind: str,
    paths: PathsLike,
    *,
    strict: bool = False,
    workers: int = 1,
    fast: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = False,
) -> ReadResult:
    """Read LPR4M files of one ``kind`` into one table (see :func:`iter_batches` for the arguments).

    Returns:
        ``ReadResult(table, report)``; ``table.schema == SCHEMAS[kind]``.

    Raises:
        FormatError: in strict mode, at the first bad row; in both modes, for a file-level fault.
    """
    report = ReadReport(kind)
    sink = RowSink(report, strict)
    batches = list(
        iter_batches(
            kind, paths, sink, workers=workers, fast=fast, chunk_bytes=chunk_bytes, progress=progress
        )
    )
    table = pa.Table.from_batches(batches, schema=SCHEMAS[kind]) if batches else SCHEMAS[kind].empty_table()
    return ReadResult(table, report)


def scan(
    kind: str,
    paths: PathsLike,
    *,
    strict: bool = False,
    workers: int = 1,
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = False,
) -> ReadReport:
    """Read files of one ``kind`` for their report only: rows are parsed, then dropped."""
    report = ReadReport(kind)
    sink = RowSink(report, strict)
    for _ in iter_batches(kind, paths, sink, workers=workers, chunk_bytes=chunk_bytes, progress=progress):
        pass
    return report


def read_frame_urls(paths: PathsLike, *, strict: bool = False, **kw) -> ReadResult:
    """Frame URL list(s) -> ``FRAME_URLS_SCHEMA`` (url, clip_id, frame_index)."""
    return read_kind("test_frame_urls", paths, strict=strict, **kw)


def read_image_urls(paths: PathsLike, *, strict: bool = False, **kw) -> ReadResult:
    """Shop image URL list(s) -> ``IMAGE_URLS_SCHEMA`` (url, image_id)."""
    return read_kind("test_image_urls", paths, strict=strict, **kw)


def read_videoinfo(paths: PathsLike, *, strict: bool = False, workers: int = 1, **kw) -> ReadResult:
    """training_videoinfo part file(s) (a path, a glob or a list) -> ``VIDEOINFO_SCHEMA``.

    ``workers > 1`` parses byte ranges in that many processes; the result is the same.
    """
    return read_kind("videoinfo", paths, strict=strict, workers=workers, **kw)


def read_test_asr(paths: PathsLike, *, strict: bool = False, **kw) -> ReadResult:
    """``test_videoid_asr``: ``clip_id \\t asr`` -> ``ASR_SCHEMA``."""
    return read_kind("test_asr", paths, strict=strict, **kw)


def read_image_titles(paths: PathsLike, *, strict: bool = False, **kw) -> ReadResult:
    """``test_image_title``: ``image_id \\t title`` -> ``TITLE_SCHEMA``."""
    return read_kind("test_titles", paths, strict=strict, **kw)


def read_gt_images(paths: PathsLike, *, strict: bool = False, **kw) -> ReadResult:
    """``test_videoid_to_gtimage`` JSON -> ``GT_IMAGES_SCHEMA`` (one row per query clip)."""
    return read_kind("test_gt_images", paths, strict=strict, **kw)


def read_frame_boxes(paths: PathsLike, *, strict: bool = False, **kw) -> ReadResult:
    """``test_frameid2gtbox`` JSON -> ``FRAME_BOXES_SCHEMA`` (one row per annotated frame)."""
    return read_kind("test_frame_boxes", paths, strict=strict, **kw)


def read_live_gallery(paths: PathsLike, *, strict: bool = False, **kw) -> ReadResult:
    """``test_liveid_to_gallery`` JSON -> ``GALLERY_SCHEMA`` (one row per live_id, image_id pair)."""
    return read_kind("test_gallery", paths, strict=strict, **kw)


# ------------------------------------------------------------------------ dict views (evaluation)


def _strict_read(read: Callable[..., ReadResult], path: str | Path) -> pa.Table:
    try:
        files = expand_paths(Path(path))
    except FileNotFoundError:
        raise FormatError(str(path), 0, "no such file") from None
    return read(files, strict=True).table


def load_ground_truth(path: str | Path) -> dict[str, list[str]]:
    """``test_videoid_to_gtimage`` as ``{video_id: [image_id, ...]}`` (every key a clip id, every
    list non-empty, no image twice), in file order.

    Raises:
        FormatError: the file is missing or malformed (file, line and key named).
    """
    table = _strict_read(read_gt_images, path)
    return dict(zip(table.column("clip_id").to_pylist(), table.column("gt_image_ids").to_pylist()))


def load_galleries(path: str | Path) -> dict[str, list[str]]:
    """``test_liveid_to_gallery`` as ``{live_id: [image_id, ...]}`` (no image twice in one gallery,
    no empty gallery), in file order.

    Raises:
        FormatError: the file is missing or malformed (file, line and key named).
    """
    table = _strict_read(read_live_gallery, path)
    out: dict[str, list[str]] = {}
    for live_id, image_id in zip(table.column("live_id").to_pylist(), table.column("image_id").to_pylist()):
        out.setdefault(live_id, []).append(image_id)
    return out
