"""Load one section of ``params.yaml`` into a frozen dataclass.

Every stage reads only its own section (named like the stage) into a frozen dataclass whose
fields are the section's keys. :func:`load_section` checks the section against the dataclass:
an unknown key, a missing required key or a value of the wrong type is a :class:`ConfigError`
naming the file, the section and the key, so a typo in ``params.yaml`` fails loudly instead of
being ignored.

Supported field types: ``bool``, ``int``, ``float`` (an int is accepted), ``str``, ``Literal[...]``,
``tuple[X, ...]`` (written as a YAML list), ``X | None`` and nested frozen dataclasses (a nested
mapping). A dataclass may validate ranges in ``__post_init__`` by raising ``ValueError``; the
message is reported with the section's location.

Example::

    @dataclass(frozen=True)
    class TrainParams:
        epochs: int = 1
        lr: float = 1e-3

    params = load_section(TrainParams, "train", "params.yaml")
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = ["ConfigError", "load_params", "load_section", "from_mapping", "to_mapping"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter file or section that does not match its dataclass."""


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a YAML parameter file whose top level is a mapping of sections.

    Args:
        path: the YAML file (usually ``params.yaml``).

    Returns:
        The parsed mapping.

    Raises:
        ConfigError: when the file is missing, is not valid YAML or is not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_section(cls: type[T], section: str, path: str | Path = "params.yaml") -> T:
    """Load ``section`` of the YAML file ``path`` into the frozen dataclass ``cls``.

    An empty section (``download:`` with nothing under it) gives the dataclass defaults.

    Args:
        cls: a dataclass type.
        section: the top-level key (the stage's name).
        path: the YAML parameter file.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: when the section is absent, has unknown keys, lacks required keys or holds
            a value of the wrong type or range.
    """
    data = load_params(path)
    if section not in data:
        known = ", ".join(sorted(map(str, data))) or "none"
        raise ConfigError(f"{path}: no section {section!r} (sections: {known})")
    return from_mapping(cls, data[section], where=f"{path}: {section}")


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, where: str = "params") -> T:
    """Build the dataclass ``cls`` from a mapping, checking keys and types.

    Args:
        cls: a dataclass type.
        mapping: the section's content (None means empty).
        where: the location shown in errors, e.g. ``"params.yaml: download"``.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: on an unknown or missing key, or a value of the wrong type or range.
    """
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        raise TypeError(f"{cls!r} is not a dataclass type")
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(mapping).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [str(k) for k in mapping if k not in fields]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (known keys: {', '.join(fields)})"
        )
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name in mapping:
            values[name] = _convert(mapping[name], hints[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def to_mapping(obj: Any) -> dict[str, Any]:
    """The inverse of :func:`from_mapping`: a plain, YAML/JSON-ready dict of a dataclass."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(obj)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"{where}: unsupported field type {_type_name(tp)}")
