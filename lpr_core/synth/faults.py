"""Deterministic fault injection for the loopback image server.

Whether an id fails, and how, is a pure function of ``(seed, id)``: :func:`fault_for`. A fraction
``fault_rate`` of ids gets a fault, spread evenly over the kinds of :class:`FaultKind`. A
downloader's test can therefore predict every outcome exactly:

================  ======================================================  ==============
kind              what the server does                                    a retry ...
================  ======================================================  ==============
``NOT_FOUND``     404 on every request                                    fails again
``SERVER_ERROR``  500 on every request                                    fails again
``TRANSIENT``     503 on the first ``transient_failures`` requests        recovers
``SLOW``          the first ``slow_requests`` requests sleep              recovers
                  ``slow_seconds`` (longer than a downloader's timeout)
                  before answering; later requests answer at once
``TRUNCATED``     200 with a JPEG cut inside its entropy-coded data       fails again
                  (valid SOI and headers, no EOI)
``CORRUPT``       200 with garbage bytes (no JPEG signature)              fails again
================  ======================================================  ==============

TRUNCATED and CORRUPT are not HTTP errors: the download succeeds and only decoding fails
(img2dataset 1.47 reports both as ``failed_to_resize``, "Image decoding error"). A downloader
that keeps the raw bytes must check them itself (a strict decode, or the JPEG EOI marker).
"""

from __future__ import annotations

import enum
import hashlib

__all__ = ["FaultKind", "fault_for", "truncate_jpeg", "corrupt_bytes", "ALL_KINDS"]


class FaultKind(enum.Enum):
    """A kind of injected fault."""

    NOT_FOUND = "not_found"
    SERVER_ERROR = "server_error"
    TRANSIENT = "transient"
    SLOW = "slow"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"

    @property
    def recoverable(self) -> bool:
        """True when a later request for the same id succeeds (a retry recovers it)."""
        return self in (FaultKind.TRANSIENT, FaultKind.SLOW)

    @property
    def http_status(self) -> int:
        """The status of a failing response of this kind (200 for the bad-body kinds and SLOW)."""
        return {FaultKind.NOT_FOUND: 404, FaultKind.SERVER_ERROR: 500, FaultKind.TRANSIENT: 503}.get(self, 200)


#: Every kind, in the fixed order :func:`fault_for` draws from.
ALL_KINDS: tuple[FaultKind, ...] = tuple(FaultKind)


def _unit(seed: int, item_id: str, salt: str) -> float:
    h = hashlib.blake2b(f"{int(seed)}\x00{salt}\x00{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def fault_for(item_id: str, fault_rate: float, seed: int = 0,
              kinds: tuple[FaultKind, ...] = ALL_KINDS) -> FaultKind | None:
    """The fault the server injects for an id, or None when it serves the id normally.

    Args:
        item_id: a frame id or image id (the URL's last path component without ``.jpg``).
        fault_rate: probability in [0, 1] that an id gets a fault.
        seed: the server's fault seed.
        kinds: the kinds to spread the faults over (evenly).

    Returns:
        The :class:`FaultKind` of this id, or None.
    """
    if not 0.0 <= fault_rate <= 1.0:
        raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
    if not kinds or fault_rate == 0.0 or _unit(seed, item_id, "rate") >= fault_rate:
        return None
    return kinds[min(int(_unit(seed, item_id, "kind") * len(kinds)), len(kinds) - 1)]


def truncate_jpeg(data: bytes, item_id: str, seed: int = 0) -> bytes:
    """Cut a JPEG inside its entropy-coded data: headers intact, end of image missing."""
    sos = data.find(b"\xff\xda")
    start = sos + 4 if sos >= 0 else 2
    frac = 0.3 + 0.4 * _unit(seed, item_id, "cut")
    cut = start + max(1, int((len(data) - start) * frac))
    return data[:min(cut, len(data) - 2)]


def corrupt_bytes(data: bytes, item_id: str, seed: int = 0) -> bytes:
    """Garbage of about the same length as ``data``, never starting with a JPEG signature."""
    n = max(64, len(data))
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.blake2b(f"{seed}\x00{item_id}\x00{counter}".encode(), digest_size=64).digest()
        counter += 1
    out = out[:n]
    if out[0] == 0xFF:
        out[0] = 0x00
    return bytes(out)
