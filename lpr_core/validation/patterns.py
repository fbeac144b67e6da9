"""The id grammar of :mod:`lpr_core.ids` as anchored regular expressions without capture groups.

They are valid both as Python ``re`` and as RE2 (Arrow's regex engine) patterns. In RE2 ``$`` is
the end of the text, as ``\\Z`` in :mod:`lpr_core.ids`.
"""

from __future__ import annotations

from lpr_core.ids import _MS, _UUID

__all__ = ["UUID_PATTERN", "CLIP_PATTERN", "FRAME_PATTERN", "SHA256_PATTERN"]

UUID_PATTERN = rf"^{_UUID}$"
CLIP_PATTERN = rf"^{_UUID}-{_MS}-{_MS}$"
FRAME_PATTERN = rf"^{_UUID}-{_MS}-{_MS}-[0-9]{{4}}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
