"""The LPR4M identifier grammar: live_id, clip_id, frame_id, image_id and their URLs.

Grammar (from the LPR4M release):

- ``live_id``: a UUID, five dash-separated hex groups of 8-4-4-4-12 characters.
- ``clip_id`` (the "video_id" of the annotation files): ``<live_id>-<start_ms>-<end_ms>``,
  two non-negative integer timestamps in milliseconds with ``start_ms <= end_ms``.
- ``frame_id``: ``<clip_id>-<NNNN>``, a frame index of exactly four digits.
- ``image_id``: a UUID, like ``live_id``.
- frame URL: ``<prefix><frame_id>.jpg``; shop image URL: ``<prefix><image_id>.jpg``.

Ids are later used as file names, so anything that is not well formed (path separators, ``..``,
whitespace, wrong group shapes) is rejected with :class:`InvalidIdError`.
"""

from __future__ import annotations

import operator
import re
from typing import NamedTuple

__all__ = [
    "InvalidIdError",
    "ClipId",
    "FrameId",
    "parse_live_id",
    "parse_image_id",
    "parse_clip_id",
    "parse_frame_id",
    "make_clip_id",
    "make_frame_id",
    "frame_url",
    "image_url",
    "parse_frame_url",
    "parse_image_url",
    "is_live_id",
    "is_image_id",
    "is_clip_id",
    "is_frame_id",
    "UUID_PATTERN",
]

#: A live_id or image_id, unanchored: the one spelling of the UUID grammar for every regex of the
#: project (compose it, e.g. ``rf"(?:{UUID_PATTERN}\n)*"``, rather than writing it again).
UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUID = UUID_PATTERN
_MS = r"(?:0|[1-9][0-9]{0,15})"
# ``\Z``, not ``$``: ``$`` also matches before a trailing newline, which would let "id\n" through.
UUID_RE = re.compile(rf"^{_UUID}\Z")
CLIP_RE = re.compile(rf"^(?P<live_id>{_UUID})-(?P<start>{_MS})-(?P<end>{_MS})\Z")
FRAME_RE = re.compile(rf"^(?P<clip_id>{_UUID}-{_MS}-{_MS})-(?P<index>[0-9]{{4}})\Z")
FRAME_INDEX_DIGITS = 4
MAX_FRAME_INDEX = 10**FRAME_INDEX_DIGITS - 1


class InvalidIdError(ValueError):
    """Raised when a string is not a well-formed LPR4M identifier or URL."""

    def __init__(self, kind: str, value: object, why: str = "") -> None:
        shown = repr(value) if len(repr(value)) <= 200 else repr(value)[:197] + "..."
        msg = f"invalid {kind}: {shown}"
        if why:
            msg += f" ({why})"
        super().__init__(msg)
        self.kind = kind
        self.value = value


class ClipId(NamedTuple):
    """A parsed clip id: the livestream and the clip's time span in milliseconds."""

    live_id: str
    start_ms: int
    end_ms: int

    def __str__(self) -> str:
        return f"{self.live_id}-{self.start_ms}-{self.end_ms}"


class FrameId(NamedTuple):
    """A parsed frame id: its clip id (a string) and its index within the clip."""

    clip_id: str
    index: int

    def __str__(self) -> str:
        return make_frame_id(self.clip_id, self.index)

    @property
    def live_id(self) -> str:
        return self.clip_id[:36]


def _why(value: str) -> str:
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if ".." in value:
        return "contains '..'"
    if value != value.strip():
        return "surrounding whitespace"
    return "wrong shape"


def _check_str(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidIdError(kind, value, f"expected str, got {type(value).__name__}")
    return value


def parse_live_id(value: str) -> str:
    """Return ``value`` when it is a well-formed live_id (a UUID); raise otherwise."""
    _check_str("live_id", value)
    if not UUID_RE.match(value):
        raise InvalidIdError("live_id", value, _why(value))
    return value


def parse_image_id(value: str) -> str:
    """Return ``value`` when it is a well-formed image_id (a UUID); raise otherwise."""
    _check_str("image_id", value)
    if not UUID_RE.match(value):
        raise InvalidIdError("image_id", value, _why(value))
    return value


def parse_clip_id(value: str) -> ClipId:
    """Parse ``live_id-start_ms-end_ms`` into a :class:`ClipId`."""
    _check_str("clip_id", value)
    m = CLIP_RE.match(value)
    if not m:
        raise InvalidIdError("clip_id", value, _why(value))
    start, end = int(m["start"]), int(m["end"])
    if start > end:
        raise InvalidIdError("clip_id", value, "start_ms after end_ms")
    return ClipId(m["live_id"], start, end)


def parse_frame_id(value: str) -> FrameId:
    """Parse ``clip_id-NNNN`` into a :class:`FrameId` (the clip id is validated too)."""
    _check_str("frame_id", value)
    m = FRAME_RE.match(value)
    if not m:
        raise InvalidIdError("frame_id", value, _why(value))
    parse_clip_id(m["clip_id"])
    return FrameId(m["clip_id"], int(m["index"]))


def _as_int(kind: str, value: object, low: int, high: int | None = None) -> int:
    # operator.index accepts int and numpy integers but refuses floats and strings, so 1.7 is
    # not silently truncated to 1; bool is an int subclass and is refused explicitly.
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidIdError(kind, value, f"expected an int, got {type(value).__name__}") from None
    if number < low or (high is not None and number > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidIdError(kind, value, f"expected an int in {bounds}")
    return number


def make_clip_id(live_id: str, start_ms: int, end_ms: int) -> str:
    """Build a clip id, validating every part (timestamps must be non-negative ints)."""
    start = _as_int("start_ms", start_ms, 0)
    end = _as_int("end_ms", end_ms, 0)
    clip = f"{parse_live_id(live_id)}-{start}-{end}"
    parse_clip_id(clip)
    return clip


def make_frame_id(clip_id: str, index: int) -> str:
    """Build a frame id ``clip_id-NNNN`` (index zero-padded to four digits).

    ``index`` may be a Python or numpy integer in ``[0, 9999]``.
    """
    number = _as_int("frame index", index, 0, MAX_FRAME_INDEX)
    parse_clip_id(clip_id)
    return f"{clip_id}-{number:04d}"


def is_live_id(value: object) -> bool:
    """True when ``value`` is a well-formed live_id."""
    return isinstance(value, str) and UUID_RE.match(value) is not None


is_image_id = is_live_id


def is_clip_id(value: object) -> bool:
    """True when ``value`` is a well-formed clip_id."""
    try:
        parse_clip_id(value)  # type: ignore[arg-type]
    except InvalidIdError:
        return False
    return True


def is_frame_id(value: object) -> bool:
    """True when ``value`` is a well-formed frame_id."""
    try:
        parse_frame_id(value)  # type: ignore[arg-type]
    except InvalidIdError:
        return False
    return True


def frame_url(prefix: str, frame_id: str) -> str:
    """The URL of a frame: ``<prefix><frame_id>.jpg``."""
    parse_frame_id(frame_id)
    return f"{prefix}{frame_id}.jpg"


def image_url(prefix: str, image_id: str) -> str:
    """The URL of a shop image: ``<prefix><image_id>.jpg``."""
    parse_image_id(image_id)
    return f"{prefix}{image_id}.jpg"


def _split_url(kind: str, url: str) -> tuple[str, str]:
    _check_str(kind, url)
    if not url.endswith(".jpg"):
        raise InvalidIdError(kind, url, "does not end with .jpg")
    cut = url.rfind("/") + 1
    return url[:cut], url[cut:-4]


def parse_frame_url(url: str) -> tuple[str, FrameId]:
    """Split a frame URL into its prefix and parsed frame id."""
    prefix, stem = _split_url("frame URL", url)
    try:
        return prefix, parse_frame_id(stem)
    except InvalidIdError as exc:
        raise InvalidIdError("frame URL", url, str(exc)) from None


def parse_image_url(url: str) -> tuple[str, str]:
    """Split a shop image URL into its prefix and image id."""
    prefix, stem = _split_url("image URL", url)
    try:
        return prefix, parse_image_id(stem)
    except InvalidIdError as exc:
        raise InvalidIdError("image URL", url, str(exc)) from None
