"""Defaults live in ``params.yaml``: a params class's field default equals the file's value.

For every section of :data:`lpr_core.params_overrides.SECTION_PARAMS` (and every nested section
dataclass), a field either carries no default or carries ``params.yaml``'s value, so a reader of
the code sees the settings that run. The real file's sections load into their classes, and a
misspelt key or a value of another type anywhere in a section is refused with the key's path.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from pathlib import Path
from typing import Any

import pytest

from lpr_core.config import ConfigError, from_mapping, load_params, load_section, to_mapping
from lpr_core.params_overrides import SECTION_PARAMS, flatten

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")


def _class(section: str) -> type:
    module, _, name = SECTION_PARAMS[section].partition(":")
    return getattr(importlib.import_module(module), name)


def _nested(cls: type, field: dataclasses.Field) -> type | None:
    tp = typing.get_type_hints(cls)[field.name]
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_mapping(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _leaf_defaults(cls: type, path: str) -> list[tuple[str, Any]]:
    """``(dotted key, default)`` of every leaf field of ``cls``, through nested section classes;
    a nested field's default instance is checked leaf by leaf too (``Params()`` uses it)."""
    out: list[tuple[str, Any]] = []
    for field in dataclasses.fields(cls):
        key = f"{path}.{field.name}"
        sub = _nested(cls, field)
        if sub is None:
            out.append((key, _default(field)))
            continue
        out.extend(_leaf_defaults(sub, key))
        instance = _default(field)
        if instance is not dataclasses.MISSING:
            out.extend((f"{key}.{name} (default instance)", value)
                       for name, value in flatten(to_mapping(instance)).items())
    return out




def _yaml_value(key: str) -> Any:
    node: Any = PARAMS
    for part in key.split(" ")[0].split("."):
        assert isinstance(node, dict) and part in node, f"{key}: a params class field that params.yaml lacks"
        node = node[part]
    return node


CASES = [(section, key, default) for section in SECTION_PARAMS
         for key, default in _leaf_defaults(_class(section), section)]


def test_every_section_has_a_params_class_and_is_in_the_file():
    assert set(SECTION_PARAMS) <= set(PARAMS)
    assert len(CASES) > 100  # every section contributes its keys


@pytest.mark.parametrize(("section", "key", "default"), CASES, ids=[key for _, key, _ in CASES])
def test_a_class_default_is_the_params_yaml_value(section, key, default):
    value = _yaml_value(key)
    if default is dataclasses.MISSING:
        return  # no competing default: params.yaml (or the caller) must say it
    assert _plain(default) == value, (f"{key}: the class default {_plain(default)!r} differs from params.yaml's "
                                      f"{value!r}; params.yaml is where defaults live")


@pytest.mark.parametrize("section", list(SECTION_PARAMS))
def test_the_real_section_loads_and_every_key_is_a_field(section):
    cls = _class(section)
    loaded = load_section(cls, section, REPO / "params.yaml")
    assert flatten(to_mapping(loaded)) == flatten(PARAMS[section])


LEAVES = [(section, key) for section, key, _ in CASES if "(default instance)" not in key]


@pytest.mark.parametrize(("section", "key"), LEAVES, ids=[key for _, key in LEAVES])
def test_a_value_of_another_type_is_refused_with_the_key_path(section, key):
    tp = typing.get_type_hints(_leaf_owner(_class(section), key))[key.rsplit(".", 1)[1]]
    if tp is Any:
        pytest.fail(f"{key}: an untyped params field accepts anything")
    mapping = _with(PARAMS[section], key.split(".")[1:], {"not": "a value"})
    with pytest.raises(ConfigError) as info:
        from_mapping(_class(section), mapping, where=f"params.yaml: {section}")
    assert f"params.yaml: {key}" in str(info.value)


NESTED = sorted({key.rsplit(".", 1)[0] for _, key in LEAVES})


@pytest.mark.parametrize("level", NESTED)
def test_an_unknown_key_is_refused_with_the_section_path(level):
    section, *path = level.split(".")
    mapping = _with(PARAMS[section], [*path, "misspelt_key"], 1)
    with pytest.raises(ConfigError) as info:
        from_mapping(_class(section), mapping, where=f"params.yaml: {section}")
    assert f"params.yaml: {level}: unknown key(s) 'misspelt_key'" in str(info.value)


def _leaf_owner(cls: type, key: str) -> type:
    for part in key.split(".")[1:-1]:
        cls = typing.get_type_hints(cls)[part]
    return cls


def _with(mapping: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``mapping`` with ``value`` at ``path`` (nested mappings copied on the way)."""
    out = dict(mapping)
    if len(path) == 1:
        out[path[0]] = value
    else:
        out[path[0]] = _with(dict(out.get(path[0]) or {}), path[1:], value)
    return out
