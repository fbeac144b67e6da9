"""A synthetic world in the exact LPR4M formats, and the loopback image server that serves it.

- :func:`generate_world` writes the world (``lpr synth``) of a family (:data:`FAMILIES`: the
  demo's ``default``, or ``release``, laid out as the LPR4M release is unpacked),
  :func:`set_url_prefix` re-points its URL files at a server.
- :class:`ImageServer` serves its JPEGs over HTTP on 127.0.0.1 with deterministic fault
  injection (``lpr serve``); :func:`fault_for` predicts the fault of any id.

Attributes are imported lazily so that ``import lpr_core.synth`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "generate_world",
    "plan_world",
    "set_url_prefix",
    "WorldSummary",
    "WorldConfig",
    "SIZES",
    "FAMILIES",
    "WorldFamily",
    "DEFAULT_URL_PREFIX",
    "SOURCE_DIR",
    "source_path",
    "ImageServer",
    "PortInUseError",
    "FaultKind",
    "fault_for",
    "make_contact_sheet",
]

_WHERE = {
    "generate_world": "world", "plan_world": "world", "set_url_prefix": "world", "WorldSummary": "world",
    "WorldConfig": "world", "SIZES": "world", "DEFAULT_URL_PREFIX": "world",
    "FAMILIES": "families", "WorldFamily": "families",
    "SOURCE_DIR": "layout", "source_path": "layout",
    "ImageServer": "server", "PortInUseError": "server",
    "FaultKind": "faults", "fault_for": "faults",
    "make_contact_sheet": "preview",
}

if TYPE_CHECKING:  # pragma: no cover
    from lpr_core.synth.families import FAMILIES, WorldFamily
    from lpr_core.synth.faults import FaultKind, fault_for
    from lpr_core.synth.layout import SOURCE_DIR, source_path
    from lpr_core.synth.preview import make_contact_sheet
    from lpr_core.synth.server import ImageServer, PortInUseError
    from lpr_core.synth.world import (
        DEFAULT_URL_PREFIX,
        SIZES,
        WorldConfig,
        WorldSummary,
        generate_world,
        plan_world,
        set_url_prefix,
    )


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"lpr_core.synth.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'lpr_core.synth' has no attribute {name!r}")
