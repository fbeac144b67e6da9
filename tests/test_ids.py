"""The LPR4M id grammar: what is accepted, what is refused (and why), and URL round trips."""

from __future__ import annotations

import numpy as np
import pytest

from lpr_core import ids
from lpr_core.ids import InvalidIdError

LIVE = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
UPPER = "0A1B2C3D-4E5F-6789-ABCD-EF0123456789"
CLIP = f"{LIVE}-1667916122888-1667916252390"
FRAME = f"{CLIP}-0081"
PREFIX = "https://cdn.example.test/bs2/ad-material-video/"


# ----------------------------------------------------------------------------- valid ids


@pytest.mark.parametrize("value", [LIVE, UPPER, "00000000-0000-0000-0000-000000000000"])
def test_uuid_ids_are_accepted_unchanged(value):
    assert ids.parse_live_id(value) == value
    assert ids.parse_image_id(value) == value
    assert ids.is_live_id(value) and ids.is_image_id(value)


@pytest.mark.parametrize(
    ("clip", "start", "end"),
    [
        (CLIP, 1667916122888, 1667916252390),
        (f"{LIVE}-0-0", 0, 0),
        (f"{LIVE}-5-5", 5, 5),
        (f"{LIVE}-0-9999999999999999", 0, 9999999999999999),
    ],
)
def test_clip_id_parses_into_its_parts(clip, start, end):
    parsed = ids.parse_clip_id(clip)
    assert parsed == ids.ClipId(LIVE, start, end)
    assert str(parsed) == clip
    assert ids.is_clip_id(clip)


@pytest.mark.parametrize("index", [0, 1, 81, 9999])
def test_frame_id_parses_and_round_trips(index):
    frame = ids.make_frame_id(CLIP, index)
    assert frame == f"{CLIP}-{index:04d}"
    parsed = ids.parse_frame_id(frame)
    assert parsed == ids.FrameId(CLIP, index)
    assert str(parsed) == frame
    assert parsed.live_id == LIVE
    assert ids.is_frame_id(frame)


def test_make_clip_id_round_trips():
    clip = ids.make_clip_id(LIVE, 1667916122888, 1667916252390)
    assert clip == CLIP
    assert ids.parse_clip_id(clip) == ids.ClipId(LIVE, 1667916122888, 1667916252390)


def test_numpy_integers_are_accepted_as_indices_and_timestamps():
    assert ids.make_frame_id(CLIP, np.uint16(7)) == f"{CLIP}-0007"
    assert ids.make_clip_id(LIVE, np.int64(1), np.int64(2)) == f"{LIVE}-1-2"


# ---------------------------------------------------------------------------- invalid ids

BAD_UUIDS = [
    "",
    "0a1b2c3d4e5f6789abcdef0123456789",  # no dashes
    "0a1b2c3d-4e5f-6789-abcd-ef012345678",  # last group 11
    "0a1b2c3d-4e5f-6789-abcd-ef01234567890",  # last group 13
    "0a1b2c3-d4e5f-6789-abcd-ef0123456789",  # groups 7-5-4-4-12
    "0a1b2c3d-4e5f-6789-abcd",  # four groups
    "0a1b2c3d-4e5f-6789-abcd-ef0123456789-01",  # six groups
    "0a1b2c3g-4e5f-6789-abcd-ef0123456789",  # not hex
    "{0a1b2c3d-4e5f-6789-abcd-ef0123456789}",
    f" {LIVE}",
    f"{LIVE} ",
    f"{LIVE}\n",  # `$` would match before this newline
    f"{LIVE}\r",
    f"../{LIVE}",
    f"{LIVE}/..",
    f"a/{LIVE}",
    f"a\\{LIVE}",
    "..",
    "０a1b2c3d-4e5f-6789-abcd-ef0123456789",  # full-width digit
]


@pytest.mark.parametrize("value", BAD_UUIDS)
def test_malformed_uuids_are_refused(value):
    for parse in (ids.parse_live_id, ids.parse_image_id):
        with pytest.raises(InvalidIdError) as exc:
            parse(value)
        assert exc.value.value == value
    assert not ids.is_live_id(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (f"../{LIVE}", "path separator"),
        (f"{LIVE}\\x", "path separator"),
        (f"{LIVE}..", "'..'"),
        (f" {LIVE}", "whitespace"),
        (f"{LIVE}\n", "whitespace"),
        ("nope", "wrong shape"),
    ],
)
def test_refusal_says_why(value, why):
    with pytest.raises(InvalidIdError, match=why):
        ids.parse_live_id(value)


@pytest.mark.parametrize("value", [None, 5, b"0a1b2c3d-4e5f-6789-abcd-ef0123456789", ["x"]])
def test_non_strings_are_refused(value):
    with pytest.raises(InvalidIdError, match="expected str"):
        ids.parse_live_id(value)
    with pytest.raises(InvalidIdError, match="expected str"):
        ids.parse_clip_id(value)
    with pytest.raises(InvalidIdError, match="expected str"):
        ids.parse_frame_id(value)
    assert not ids.is_clip_id(value) and not ids.is_frame_id(value)


BAD_CLIPS = [
    LIVE,  # no timestamps
    f"{LIVE}-1",  # one timestamp
    f"{LIVE}-1-2-3",  # three (this is not a frame id either: index must have 4 digits)
    f"{LIVE}--1-2",  # negative
    f"{LIVE}-01-2",  # leading zero
    f"{LIVE}-1-02",
    f"{LIVE}-1.5-2",
    f"{LIVE}-1-2 ",
    f"{LIVE}-1-2\n",
    f"{LIVE}-1-2/..",
    f"{LIVE}-a-2",
    f"{LIVE}-1-12345678901234567",  # 17 digits
    f"{LIVE[:-1]}-1-2",
    f"{LIVE}-١-2",  # Arabic-Indic digit
    "../../etc/passwd-1-2",
]


@pytest.mark.parametrize("value", BAD_CLIPS)
def test_malformed_clip_ids_are_refused(value):
    with pytest.raises(InvalidIdError):
        ids.parse_clip_id(value)
    assert not ids.is_clip_id(value)


def test_clip_that_ends_before_it_starts_is_refused():
    with pytest.raises(InvalidIdError, match="start_ms after end_ms"):
        ids.parse_clip_id(f"{LIVE}-10-9")


BAD_FRAMES = [
    CLIP,  # no index
    f"{CLIP}-81",  # 2 digits
    f"{CLIP}-081",
    f"{CLIP}-00081",  # 5 digits
    f"{CLIP}-008a",
    f"{CLIP}--081",
    f"{CLIP}-0081\n",
    f"{CLIP}-0081 ",
    f"{CLIP}-0081.jpg",
    f"../{FRAME}",
    f"{LIVE}/x-1-2-0081",
    f"{LIVE}-10-9-0001",  # the clip part is invalid (start after end)
    f"{LIVE}-0001",  # no clip span
]


@pytest.mark.parametrize("value", BAD_FRAMES)
def test_malformed_frame_ids_are_refused(value):
    with pytest.raises(InvalidIdError):
        ids.parse_frame_id(value)
    assert not ids.is_frame_id(value)


@pytest.mark.parametrize("index", [-1, 10000, 1.0, 1.7, "1", True, None])
def test_make_frame_id_refuses_bad_indices(index):
    with pytest.raises(InvalidIdError):
        ids.make_frame_id(CLIP, index)


def test_make_frame_id_refuses_a_bad_clip():
    with pytest.raises(InvalidIdError):
        ids.make_frame_id(f"../{CLIP}", 1)


@pytest.mark.parametrize(
    ("start", "end"),
    [(1.7, 2), (1, 2.0), ("5", "7"), (-1, 2), (True, 2), (5, 4), (10**16, 10**16)],
)
def test_make_clip_id_refuses_bad_timestamps(start, end):
    with pytest.raises(InvalidIdError):
        ids.make_clip_id(LIVE, start, end)


def test_make_clip_id_refuses_a_bad_live_id():
    with pytest.raises(InvalidIdError):
        ids.make_clip_id(f"{LIVE}/..", 1, 2)


def test_error_message_is_bounded_for_huge_values():
    with pytest.raises(InvalidIdError) as exc:
        ids.parse_live_id("x" * 10_000)
    assert len(str(exc.value)) < 300
    assert exc.value.kind == "live_id"


# ------------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize("prefix", [PREFIX, "http://127.0.0.1:8000/frames/", "", "file:///tmp/a/"])
def test_frame_url_round_trip(prefix):
    url = ids.frame_url(prefix, FRAME)
    assert url == f"{prefix}{FRAME}.jpg"
    got_prefix, frame = ids.parse_frame_url(url)
    assert got_prefix == prefix
    assert frame == ids.FrameId(CLIP, 81)
    assert ids.frame_url(got_prefix, str(frame)) == url


@pytest.mark.parametrize("prefix", [PREFIX, "http://127.0.0.1:8000/images/", ""])
def test_image_url_round_trip(prefix):
    url = ids.image_url(prefix, LIVE)
    assert url == f"{prefix}{LIVE}.jpg"
    assert ids.parse_image_url(url) == (prefix, LIVE)
    assert ids.image_url(*ids.parse_image_url(url)) == url


def test_real_lpr4m_frame_url_parses():
    url = (
        "https://js-ad.a.yximgs.com/bs2/ad-material-video/"
        "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0-1667916122888-1667916252390-0081.jpg"
    )
    prefix, frame = ids.parse_frame_url(url)
    assert prefix == "https://js-ad.a.yximgs.com/bs2/ad-material-video/"
    assert frame.clip_id == "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0-1667916122888-1667916252390"
    assert frame.index == 81
    assert frame.live_id == "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0"


@pytest.mark.parametrize(
    "url",
    [
        f"{PREFIX}{FRAME}.png",
        f"{PREFIX}{FRAME}.JPG",
        f"{PREFIX}{FRAME}",
        f"{PREFIX}{FRAME}.jpg?x=1",
        f"{PREFIX}{FRAME}\n.jpg",
        f"{PREFIX}..\\{FRAME}.jpg",
        f"{PREFIX}{CLIP}.jpg",  # a clip is not a frame
        f"{PREFIX}{LIVE}.jpg",
        f"{PREFIX}x{FRAME}.jpg",
        ".jpg",
    ],
)
def test_malformed_frame_urls_are_refused(url):
    with pytest.raises(InvalidIdError, match="frame URL"):
        ids.parse_frame_url(url)


@pytest.mark.parametrize(
    "url",
    [f"{PREFIX}{LIVE}.png", f"{PREFIX}{FRAME}.jpg", f"{PREFIX}{LIVE}x.jpg", f"{PREFIX}{LIVE}\n.jpg", "x.jpg"],
)
def test_malformed_image_urls_are_refused(url):
    with pytest.raises(InvalidIdError, match="image URL"):
        ids.parse_image_url(url)


def test_url_builders_refuse_bad_ids():
    with pytest.raises(InvalidIdError):
        ids.frame_url(PREFIX, f"../{FRAME}")
    with pytest.raises(InvalidIdError):
        ids.image_url(PREFIX, f"{LIVE}/../x")
    with pytest.raises(InvalidIdError):
        ids.frame_url(PREFIX, CLIP)
