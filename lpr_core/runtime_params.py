"""Which params change a stage's results, and which only change how the stage runs.

A params dataclass marks a *runtime* setting with field metadata::

    num_workers: int = field(default=2, metadata={"runtime": True})

A runtime setting (worker processes, prefetching, progress bars, the device, download
concurrency) changes how fast and where a stage runs, never what it produces beyond
floating-point noise. Every other key is *result-bearing*. The split serves two consumers:

- ``dvc.yaml``: each stage's ``params:`` list names exactly its result-bearing keys
  (:func:`result_keys`), so a change of ``num_workers`` does not rerun a stage and does not miss
  the run cache (a test pins ``dvc.yaml`` to the dataclasses);
- resumable state (:mod:`lpr_core.state`, :mod:`lpr_core.training.resume`): a checkpoint or a
  partial download is keyed by the result-bearing params (:func:`result_bearing`), so a retried
  pod with another ``num_workers`` or ``device`` continues it, and a changed learning rate does not.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

__all__ = ["RUNTIME", "is_runtime", "result_bearing", "runtime_settings", "result_keys"]

#: The field metadata of a runtime setting (``field(default=..., metadata=RUNTIME)``).
RUNTIME = {"runtime": True}


def is_runtime(field: dataclasses.Field) -> bool:
    """True when the dataclass field is a runtime setting (``metadata={"runtime": True}``)."""
    return bool(field.metadata.get("runtime", False))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return result_bearing(value)
    return value


def result_bearing(params: Any) -> dict[str, Any]:
    """The result-bearing part of a params dataclass instance as a plain (JSON-ready) mapping:
    :func:`lpr_core.config.to_mapping` without the runtime settings, at every level."""
    if not dataclasses.is_dataclass(params) or isinstance(params, type):
        raise TypeError(f"{params!r} is not a dataclass instance")
    return {f.name: _plain(getattr(params, f.name)) for f in dataclasses.fields(params) if not is_runtime(f)}


def runtime_settings(params: Any, prefix: str = "") -> dict[str, Any]:
    """The runtime settings of a params dataclass instance, as ``{"train.num_workers": 1, ...}``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if is_runtime(f):
            out[f"{prefix}{f.name}"] = value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(runtime_settings(value, f"{prefix}{f.name}."))
    return out


def _nested(cls: Any, f: dataclasses.Field) -> Any:
    """The dataclass type of a nested section field, or None."""
    tp = typing.get_type_hints(cls).get(f.name)
    return tp if dataclasses.is_dataclass(tp) else None


def _all_result_bearing(cls: Any) -> bool:
    for f in dataclasses.fields(cls):
        if is_runtime(f):
            return False
        sub = _nested(cls, f)
        if sub is not None and not _all_result_bearing(sub):
            return False
    return True


def result_keys(cls: Any, section: str) -> list[str]:
    """The result-bearing keys of a params section, as ``dvc.yaml`` names them in ``params:``.

    The shortest list that covers them: a (sub)section without a runtime setting is named
    whole (``train_encoder.model``, or just ``prepare``), otherwise its keys one by one, in the
    dataclass's order.

    Args:
        cls: the section's params dataclass type.
        section: the dotted name of the section in ``params.yaml`` (the stage's name).

    Returns:
        Dotted keys, e.g. ``["train_encoder.model", "train_encoder.data", "train_encoder.train.max_steps", ...]``.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"{cls!r} is not a dataclass type")
    if _all_result_bearing(cls):
        return [section]
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        if is_runtime(f):
            continue
        sub = _nested(cls, f)
        keys += result_keys(sub, f"{section}.{f.name}") if sub is not None else [f"{section}.{f.name}"]
    return keys
