"""The prediction file of the official LPR4M evaluation: ``{video_id: [[image_id, score], ...]}``.

Lists are best first. :func:`load_predictions` reads a file, :func:`unsorted_queries` finds lists
not in score order, :func:`check_predictions_in_galleries` checks the protocol (a query ranks only
its own livestream's gallery). The ground truth and the galleries it is scored against are read by
the one reader of their files, :func:`lpr_core.formats.readers.load_ground_truth` and
:func:`~lpr_core.formats.readers.load_galleries`.

Every problem raises :class:`~lpr_core.formats.report.FormatError` naming the file and the key at
fault (and the line where the reader knows it), never a bare ``KeyError``/``TypeError`` from deep
inside the scoring. ``EvaluationInputError`` is the evaluation package's name for it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpr_core.formats.report import FormatError
from lpr_core.ids import _UUID, parse_clip_id, parse_image_id

__all__ = [
    "EvaluationInputError",
    "load_predictions",
    "unsorted_queries",
    "check_predictions_in_galleries",
]

#: The error of an evaluation input (the same class as every LPR4M reader's).
EvaluationInputError = FormatError


def _load_object(path: str | os.PathLike[str], expected: str) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(str(p), 0, "no such file") from None
    except UnicodeDecodeError as exc:
        raise FormatError(str(p), 0, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(str(p), exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict):
        raise FormatError(str(p), 0, f"expected a JSON object {expected}, got {type(data).__name__}")
    return data


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_duplicate(ids: Sequence[str]) -> str:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            return i
        seen.add(i)
    raise AssertionError("no duplicate")


def load_predictions(path: str | os.PathLike[str]) -> dict[str, list[tuple[str, float]]]:
    """Read ``{video_id: [[image_id, score], ...]}`` (best first).

    Every key must be a clip id; every entry a two-element list of an image id and a finite
    number; no image twice in one list. An empty list is allowed (a query without prediction).

    Returns:
        ``{video_id: [(image_id, score), ...]}`` in file order.

    Raises:
        FormatError: the file is missing or malformed (file and key named).
    """
    data = _load_object(path, "{video_id: [[image_id, score], ...]}")
    p = str(path)

    def fail(key: str, reason: str) -> FormatError:
        return FormatError(p, 0, f"key {key!r}: {reason}")

    out: dict[str, list[tuple[str, float]]] = {}
    for key, value in data.items():
        try:
            parse_clip_id(key)
        except ValueError as exc:
            raise fail(key, str(exc)) from None
        if not isinstance(value, list):
            raise fail(key, f"expected a list of [image_id, score] pairs, got {_short(value)}")
        fast = _well_formed_pairs(value)
        if fast is not None:
            out[key] = fast
            continue
        # something is wrong in this list: walk it entry by entry to say what and where
        pairs = []
        for i, entry in enumerate(value):
            if (
                not isinstance(entry, list)
                or len(entry) != 2
                or not isinstance(entry[0], str)
                or isinstance(entry[1], bool)
                or not isinstance(entry[1], int | float)
            ):
                raise fail(key, f"entry {i}: expected [image_id, score], got {_short(entry)}")
            if not math.isfinite(entry[1]):
                raise fail(key, f"entry {i}: score is not finite ({entry[1]})")
            try:
                parse_image_id(entry[0])
            except ValueError as exc:
                raise fail(key, f"entry {i}: {exc}") from None
            pairs.append((entry[0], float(entry[1])))
        ids = [image_id for image_id, _ in pairs]
        if len(set(ids)) != len(ids):
            raise fail(key, f"image_id {_first_duplicate(ids)} listed twice")
        out[key] = pairs
    return out


_ID_LINES = re.compile(rf"(?:{_UUID}\n)*{_UUID}")


def _well_formed_pairs(value: list[Any]) -> list[tuple[str, float]] | None:
    """The pairs of a list that passes every check, else None. Set-level checks run in C:
    a full-scale prediction file holds ~12M pairs, one Python call per pair costs seconds."""
    if not value:
        return []
    if set(map(type, value)) != {list} or set(map(len, value)) != {2}:
        return None
    ids, scores = zip(*value)
    if set(map(type, ids)) != {str} or not set(map(type, scores)) <= {int, float}:
        return None
    joined = "\n".join(ids)
    if joined.count("\n") != len(ids) - 1 or _ID_LINES.fullmatch(joined) is None:
        return None
    if not np.isfinite(np.fromiter(scores, dtype=np.float64, count=len(scores))).all():
        return None
    if len(set(ids)) != len(ids):
        return None
    return list(zip(ids, map(float, scores)))


def unsorted_queries(predictions: Mapping[str, Sequence[tuple[str, float]]]) -> list[str]:
    """Queries whose list is not in non-increasing score order (the file order still ranks)."""
    return [
        key
        for key, pairs in predictions.items()
        if any(pairs[i][1] < pairs[i + 1][1] for i in range(len(pairs) - 1))
    ]


def check_predictions_in_galleries(
    predictions: Mapping[str, Sequence[tuple[str, float]]],
    galleries: Mapping[str, Sequence[str]],
    *,
    source: str = "predictions",
) -> None:
    """Raise when a query's predictions leave its own livestream's gallery (protocol breach).

    Raises:
        FormatError: naming ``source``, the query and the entry.
    """
    members = {live_id: set(ids) for live_id, ids in galleries.items()}
    for key, pairs in predictions.items():
        live_id = parse_clip_id(key).live_id
        gallery = members.get(live_id)
        if gallery is None:
            if pairs:
                raise FormatError(str(source), 0, f"key {key!r}: livestream {live_id} has no gallery")
            continue
        for i, (image_id, _) in enumerate(pairs):
            if image_id not in gallery:
                raise FormatError(
                    str(source), 0,
                    f"key {key!r}: entry {i}: image_id {image_id} is not in the gallery of livestream {live_id}",
                )
