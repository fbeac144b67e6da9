"""Writers for every LPR4M file, in the exact on-disk formats of the release.

List columns of ``training_videoinfo`` are written as Python literals (as the release does) or,
with ``list_syntax="json"``, in JSON list syntax; the readers accept both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lpr_core.formats.records import Box, VideoInfoRow

__all__ = [
    "atomic_write_text",
    "write_url_list",
    "write_videoinfo",
    "format_videoinfo_row",
    "LIST_SYNTAXES",
    "write_test_asr",
    "write_image_titles",
    "write_gt_images",
    "write_frame_boxes",
    "write_live_gallery",
]


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def _clean_text(value: str) -> str:
    # tabs and newlines would break the one-row-per-line TSV format
    return " ".join(str(value).split())


def _fmt_num(v: float) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(round(f, 2))


def _fmt_boxes(boxes: Sequence[Sequence[Box]]) -> str:
    frames = []
    for frame_boxes in boxes:
        frames.append(
            "[" + ", ".join("[" + ", ".join(_fmt_num(v) for v in b) + "]" for b in frame_boxes) + "]"
        )
    return "[" + ", ".join(frames) + "]"


#: The serializations of a list column: Python literals (``['a', 'b']``) or JSON (``["a", "b"]``).
LIST_SYNTAXES = ("python", "json")


def format_videoinfo_row(row: VideoInfoRow, list_syntax: str = "python") -> str:
    """One ``training_videoinfo`` line (without the newline): 11 tab-separated columns.

    Args:
        row: the clip.
        list_syntax: ``"python"`` (single-quoted frame ids, as the release) or ``"json"``.
    """
    if list_syntax not in LIST_SYNTAXES:
        raise ValueError(f"list_syntax must be one of {', '.join(LIST_SYNTAXES)}, got {list_syntax!r}")
    if len(row.frame_ids) != len(row.boxes):
        raise ValueError(f"{row.video_id}: {len(row.frame_ids)} frames but {len(row.boxes)} box lists")
    quote = "'" if list_syntax == "python" else '"'
    cols = [
        row.video_id,
        "[" + ", ".join(f"{quote}{f}{quote}" for f in row.frame_ids) + "]",
        _fmt_boxes(row.boxes),
        row.image_id,
        _clean_text(row.image_title),
        str(int(row.category_id)),
        _clean_text(row.category_name),
        _clean_text(row.asr),
        str(int(row.scale_type)),
        str(int(row.duration_type)),
        str(int(row.number_type)),
    ]
    return "\t".join(cols)


def write_url_list(path: str | Path, urls: Iterable[str]) -> Path:
    """One URL per line."""
    return atomic_write_text(path, "".join(f"{u}\n" for u in urls))


def write_videoinfo(path: str | Path, rows: Iterable[VideoInfoRow], list_syntax: str = "python") -> Path:
    """Write a ``training_videoinfo`` part file (list columns in ``list_syntax``, see
    :func:`format_videoinfo_row`)."""
    return atomic_write_text(path, "".join(format_videoinfo_row(r, list_syntax) + "\n" for r in rows))


def _write_tsv2(path: str | Path, mapping: Mapping[str, str]) -> Path:
    return atomic_write_text(path, "".join(f"{k}\t{_clean_text(v)}\n" for k, v in mapping.items()))


def write_test_asr(path: str | Path, asr: Mapping[str, str]) -> Path:
    """``test_videoid_asr``: ``video_id \\t asr`` per line."""
    return _write_tsv2(path, asr)


def write_image_titles(path: str | Path, titles: Mapping[str, str]) -> Path:
    """``test_image_title``: ``image_id \\t title`` per line."""
    return _write_tsv2(path, titles)


def _write_json(path: str | Path, obj: object) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False))


def write_gt_images(path: str | Path, gt: Mapping[str, Sequence[str]]) -> Path:
    """``test_videoid_to_gtimage``: ``{video_id: [image_id, ...]}``."""
    return _write_json(path, {k: list(v) for k, v in gt.items()})


def write_frame_boxes(path: str | Path, boxes: Mapping[str, Sequence[Box]]) -> Path:
    """``test_frameid2gtbox``: ``{frame_id: [[x1, y1, x2, y2], ...]}``."""
    return _write_json(path, {k: [[float(v) for v in b] for b in bs] for k, bs in boxes.items()})


def write_live_gallery(path: str | Path, gallery: Mapping[str, Sequence[str]]) -> Path:
    """``test_liveid_to_gallery``: ``{live_id: [image_id, ...]}``."""
    return _write_json(path, {k: list(v) for k, v in gallery.items()})
