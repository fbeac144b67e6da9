"""Fault injection is a pure function of (seed, id) with the declared recoverability."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from PIL import Image

from lpr_core.synth.faults import ALL_KINDS, FaultKind, corrupt_bytes, fault_for, truncate_jpeg

IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(12000)]


def test_fault_draw_is_deterministic_and_matches_the_rate():
    a = [fault_for(i, 0.3, seed=7) for i in IDS]
    assert a == [fault_for(i, 0.3, seed=7) for i in IDS]
    assert a != [fault_for(i, 0.3, seed=8) for i in IDS]
    share = sum(k is not None for k in a) / len(IDS)
    assert share == pytest.approx(0.3, abs=0.02)
    counts = Counter(k for k in a if k is not None)
    assert set(counts) == set(ALL_KINDS)
    per_kind = sum(counts.values()) / len(ALL_KINDS)
    assert all(abs(c - per_kind) < 0.2 * per_kind for c in counts.values())


def test_rate_bounds_and_nesting():
    assert all(fault_for(i, 0.0) is None for i in IDS[:500])
    assert all(fault_for(i, 1.0) is not None for i in IDS[:500])
    # a higher rate keeps the faults of a lower one (same kinds): rates are comparable
    low = {i: fault_for(i, 0.1, 3) for i in IDS[:3000]}
    high = {i: fault_for(i, 0.2, 3) for i in IDS[:3000]}
    assert all(high[i] == k for i, k in low.items() if k is not None)
    assert all(fault_for(i, 1.0, kinds=(FaultKind.SLOW,)) is FaultKind.SLOW for i in IDS[:50])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="fault_rate"):
            fault_for(IDS[0], bad)


def test_declared_recoverability_and_status():
    assert {k for k in FaultKind if k.recoverable} == {FaultKind.TRANSIENT, FaultKind.SLOW}
    assert FaultKind.NOT_FOUND.http_status == 404
    assert FaultKind.SERVER_ERROR.http_status == 500
    assert FaultKind.TRANSIENT.http_status == 503
    assert FaultKind.TRUNCATED.http_status == FaultKind.CORRUPT.http_status == 200


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="JPEG", quality=50)
    return buf.getvalue()


def test_truncated_jpeg_keeps_its_header_but_not_its_end():
    data = _jpeg()
    cut = truncate_jpeg(data, IDS[0])
    assert cut == truncate_jpeg(data, IDS[0]) and data.startswith(cut) and len(cut) < len(data)
    assert cut[:2] == b"\xff\xd8" and b"\xff\xda" in cut and not cut.endswith(b"\xff\xd9")
    with Image.open(io.BytesIO(cut)) as im:
        assert im.size == (64, 48)  # the header is valid ...
        with pytest.raises(OSError):
            im.load()  # ... the image is not


def test_corrupt_bytes_are_not_a_jpeg():
    data = _jpeg()
    bad = corrupt_bytes(data, IDS[1])
    assert bad == corrupt_bytes(data, IDS[1]) and bad != data and len(bad) == len(data)
    assert bad[:2] != b"\xff\xd8"
    with pytest.raises(OSError):
        Image.open(io.BytesIO(bad))
