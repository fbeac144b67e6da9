"""Parameter overrides and presets: change ``params.yaml`` keys by their dotted path, checked first.

A pipeline trigger (the Airflow run's ``params`` conf, a KFP input), a preset
(``presets/<name>.yaml``) or a user at the command line names keys as dotted paths
(``train_encoder.train.lr``) with new values. Before anything is written:

- every key must already exist in ``params.yaml`` (a typo is an error naming the key and the keys
  that do exist at that level);
- the new value must have the type of the old one (an integer may replace a number; ``null``, and a
  value of another type that the section's params class declares for the key, such as a count for
  ``validate.decode_sample: all``, are left to the next check);
- each touched section, with the overrides applied, must load into its stage's params class
  (:data:`SECTION_PARAMS`), which checks ranges, choices and optional (``null``) values.

The file is then rewritten atomically, keeping its comments, order and anchors: a key that is a YAML
alias of another (``validate.image_size: *image_size``) changes together with it, and the change is
reported. :func:`apply_overrides` is what ``lpr params apply`` runs::

    lpr params apply --preset rice_paper                       # presets/rice_paper.yaml
    lpr params apply --set train_encoder.train.lr=0.003 --set train_encoder.train.max_steps=800
    lpr params apply --json '{"train_encoder.train.lr": 0.003}'
    eval "dvc exp run $(lpr params apply --preset rice_paper --dvc-args)"   # `-S` arguments only
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import io as _stringio
import json
import logging
import shlex
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.scalarfloat import ScalarFloat
from ruamel.yaml.scalarint import ScalarInt
from ruamel.yaml.scalarstring import PlainScalarString

from lpr_core import io
from lpr_core.config import ConfigError, from_mapping

log = logging.getLogger(__name__)

__all__ = [
    "SECTION_PARAMS",
    "OverrideError",
    "Change",
    "flatten",
    "parse_assignment",
    "load_preset",
    "collect_overrides",
    "check_overrides",
    "apply_overrides",
    "dvc_set_args",
    "add_arguments",
    "run",
]

#: The params class of each ``params.yaml`` section (``module:Class``), imported only when a
#: section is overridden.
SECTION_PARAMS: dict[str, str] = {
    "download": "lpr_core.data.download:DownloadParams",
    "validate": "lpr_core.validation.params:ValidateParams",
    "prepare": "lpr_core.data.prepare:PrepareParams",
    "train_detector": "lpr_core.training.tasks:TrainDetectorParams",
    "train_encoder": "lpr_core.training.tasks:TrainEncoderParams",
    "index_gallery": "lpr_core.index.build:IndexGalleryParams",
    "evaluate": "lpr_core.evaluation.params:EvaluateParams",
    "promote": "lpr_core.tracking.gate:GateConfig",
}
#: Where ``--preset NAME`` looks, relative to the params file's directory.
PRESETS_DIR = "presets"


class OverrideError(ConfigError):
    """An override that cannot be applied; the message names the key (and the preset or file)."""


@dataclass(frozen=True)
class Change:
    """One changed key: its dotted path, old and new value, and the key it aliases (if any)."""

    key: str
    old: Any
    new: Any
    alias_of: str | None = None

    def __str__(self) -> str:
        via = f" (a YAML alias of {self.alias_of})" if self.alias_of else ""
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}{via}"


def _show(value: Any) -> str:
    return json.dumps(_plain(value))


def _plain(value: Any) -> Any:
    """ruamel's round-trip types as plain Python values."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key.path=VALUE`` -> ``(key.path, value)``; VALUE is read as YAML (``0.003``, ``true``,
    ``null``, ``[1, 2]``, a bare string)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise OverrideError(f"--set {text!r}: expected KEY=VALUE, e.g. train_encoder.train.lr=0.003")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise OverrideError(f"--set {key}: value {raw!r} is not valid YAML: {exc}") from None
    return key, value


def load_preset(name: str, params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """The overrides of a preset: ``presets/<name>.yaml`` beside the params file, or a YAML file path.

    A preset is a mapping of dotted keys (or nested sections) to values.
    """
    candidate = Path(name)
    path = candidate if candidate.suffix in (".yaml", ".yml") else Path(params_path).parent / PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        folder = Path(params_path).parent / PRESETS_DIR
        known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise OverrideError(f"preset {name!r}: no file {path} (presets: {', '.join(known) or 'none'})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise OverrideError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise OverrideError(f"{path}: a preset is a mapping of params keys to values")
    return flatten(data)


def collect_overrides(*, preset: str | None = None, json_text: str | None = None, sets: Iterable[str] = (),
                      params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """The overrides of one command, merged in order: the preset, the JSON object, each ``--set``.

    Args:
        preset: a preset name or file (see :func:`load_preset`).
        json_text: a JSON object of dotted keys (or nested sections) to values; empty means none.
        sets: ``KEY=VALUE`` assignments.
        params_path: the params file (presets are found beside it).
    """
    out: dict[str, Any] = {}
    if preset:
        out.update(load_preset(preset, params_path))
    if json_text and json_text.strip():
        try:
            data = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise OverrideError(f"overrides: not a JSON object: {exc}") from None
        if not isinstance(data, Mapping):
            raise OverrideError(f"overrides: expected a JSON object of params keys, got {type(data).__name__}")
        out.update(flatten(data))
    for assignment in sets:
        key, value = parse_assignment(assignment)
        out[key] = value
    return out


def _same_type(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True  # left to the section's params class (Optional fields)
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, int | float)
    if isinstance(old, int):
        return isinstance(new, int)
    if isinstance(old, str):
        return isinstance(new, str)
    if isinstance(old, list):
        return isinstance(new, list)
    if isinstance(old, Mapping):
        return isinstance(new, Mapping)
    return type(old) is type(new)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _locate(params: Mapping[str, Any], key: str, where: str) -> tuple[Any, str]:
    """The mapping holding ``key``'s last part, and that part; raises naming the missing level."""
    parts = key.split(".")
    node: Any = params
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, Mapping) or part not in node:
            known = ", ".join(map(str, node)) if isinstance(node, Mapping) else "none"
            raise OverrideError(f"{where}: unknown key {key!r}: no {'.'.join(parts[:depth + 1])!r} (known: {known})")
        node = node[part]
    if not isinstance(node, Mapping) or parts[-1] not in node:
        known = ", ".join(map(str, node)) if isinstance(node, Mapping) else "none"
        raise OverrideError(f"{where}: unknown key {key!r} (known at {'.'.join(parts[:-1]) or 'the top'}: {known})")
    return node, parts[-1]


def _params_class(section: str) -> type | None:
    spec = SECTION_PARAMS.get(section)
    if spec is None:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _declared(key: str, value: Any) -> bool:
    """Whether the section's params class declares a type of ``value`` for ``key`` (a member of the
    field's union, e.g. ``int`` of ``decode_sample: int | str``)."""
    section, *path = key.split(".")
    tp: Any = _params_class(section)
    for part in path:
        if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
            return False
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return False
        tp = hints[part]
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    members = [t for t in (typing.get_args(tp) if union else (tp,)) if isinstance(t, type)]
    if isinstance(value, bool):
        return bool in members
    return any(isinstance(value, t) for t in members)


def check_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any],
                    where: str = "params.yaml") -> dict[str, Any]:
    """``params`` (plain mappings) with ``overrides`` applied, after checking every key and type.

    Args:
        params: the parsed params file.
        overrides: dotted keys to new values.
        where: the source named in errors (a file, a preset, a trigger).

    Returns:
        A new mapping; ``params`` is not changed.

    Raises:
        OverrideError: an unknown key, a value of another type, or a section that its params class
            refuses (the message names the key path).
    """
    new = copy.deepcopy(_plain(params))
    for key, value in overrides.items():
        node, leaf = _locate(new, key, where)
        old = node[leaf]
        if isinstance(old, Mapping) and old:
            raise OverrideError(f"{where}: {key!r} is a section; override its keys ({key}.<name>) instead")
        if not _same_type(old, value) and not _declared(key, value):
            raise OverrideError(f"{where}: {key}: expected {_type_name(old)} like the current {_show(old)}, "
                                f"got {_show(value)}")
        node[leaf] = value
    for section in sorted({k.split(".", 1)[0] for k in overrides}):
        cls = _params_class(section)
        if cls is not None:
            try:
                from_mapping(cls, new[section], where=f"{where} (overrides applied): {section}")
            except ConfigError as exc:
                raise OverrideError(str(exc)) from None
    return new


def _aliases(root: Any, target: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every place in a round-trip tree that holds the very object ``target``."""
    found = []
    if isinstance(root, Mapping):
        for k, v in root.items():
            path = f"{prefix}{k}"
            if v is target:
                found.append(path)
            found += _aliases(v, target, f"{path}.")
    return found


def _anchored(value: Any, anchor: str | None) -> Any:
    """``value`` as a ruamel node carrying ``anchor`` (so its aliases keep pointing at it)."""
    if anchor is None or isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        node: Any = ScalarInt(value)
    elif isinstance(value, float):
        node = ScalarFloat(value)
    elif isinstance(value, str):
        node = PlainScalarString(value)
    else:
        return value
    node.yaml_set_anchor(anchor, always_dump=True)
    return node


def _round_trip_yaml():
    """A ruamel round-trip loader/dumper that writes params.yaml the way it is written by hand."""
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 110
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    rt.representer.add_representer(
        float, lambda rep, v: rep.represent_scalar("tag:yaml.org,2002:float", _float_text(v)))
    return rt


def apply_overrides(path: str | Path, overrides: Mapping[str, Any], *, write: bool = True,
                    where: str | None = None) -> list[Change]:
    """Check ``overrides`` against the params file ``path`` and write them into it.

    Comments, key order and anchors are kept; a key aliased elsewhere (``*image_size``) changes in
    every place that aliases it. Nothing is written when a check fails.

    Args:
        path: the params file.
        overrides: dotted keys to new values.
        write: False checks only (and returns what would change).
        where: the source named in errors (default: the file).

    Returns:
        The changes, aliases included; keys whose value is already the requested one are left out.
    """
    path = Path(path)
    where = where or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OverrideError(f"{path}: parameter file not found") from None
    rt = _round_trip_yaml()
    doc = rt.load(text)
    check_overrides(doc, overrides, where)
    changes: list[Change] = []
    edits: list[_LineEdit | None] = []  # where each new value goes in the file's text
    for key, value in overrides.items():
        node, leaf = _locate(doc, key, where)
        old = node[leaf]
        if _plain(old) == value and type(_plain(old)) is type(value):
            continue
        anchor = getattr(getattr(old, "anchor", None), "value", None)
        shared = _aliases(doc, old) if anchor or isinstance(old, list | dict) else [key]
        new = _anchored(value, anchor)
        edits.append(_line_edit(node, leaf, value))
        for other in shared or [key]:
            holder, name = _locate(doc, other, where)
            holder[name] = new
            changes.append(Change(other, _plain(old), value, None if other == key else key))
    if write and changes:
        edited = _edit_lines(text, edits)
        if edited is None:  # a value spanning lines: let ruamel write the whole file
            buf = _stringio.StringIO()
            rt.dump(doc, buf)
            edited = buf.getvalue()
        io.atomic_write_text(path, edited)
    return changes


def _float_text(value: float) -> str:
    """A float as YAML 1.1 readers (PyYAML: the stages, ``yaml.safe_load``) read it back as a float:
    ``1e-05`` would be a string to them, so the mantissa gets its dot (``1.0e-05``)."""
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


def _scalar_text(value: Any) -> str | None:
    """``value`` as it is written on one YAML line (None when it needs more than a plain line)."""
    if isinstance(value, float) and not isinstance(value, bool):
        return _float_text(value)
    if value is None or isinstance(value, bool | int):
        return json.dumps(value)
    if isinstance(value, str):
        plain = value and "\n" not in value and value.strip() == value and not any(c in value for c in "#:{}[],&*!|>'\"%@`")
        try:
            plain = plain and yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain = False
        return value if plain else json.dumps(value)
    if isinstance(value, list) and all(v is None or isinstance(v, bool | int | float | str) for v in value):
        return "[" + ", ".join(_scalar_text(v) or json.dumps(v) for v in value) + "]"
    return None


@dataclass(frozen=True)
class _LineEdit:
    line: int  # 0-based line of the value
    col: int  # column where the value starts
    comment_col: int | None  # column of a comment on the same line
    text: str  # the new value as written


def _line_edit(holder: Any, key: str, value: Any) -> _LineEdit | None:
    """Where ``holder[key]``'s value is written, and its replacement; None unless both the old and
    the new value are one-line scalars written right after their key."""
    old = holder[key]
    text = _scalar_text(value)
    if text is None or isinstance(old, Mapping):
        return None
    line, col = holder.lc.value(key)
    if isinstance(old, list) and not (
            hasattr(old, "fa") and old.fa.flow_style() and all(old.lc.item(i)[0] == line for i in range(len(old)))):
        return None  # a block list, or a flow list over several lines
    if line != holder.lc.key(key)[0]:  # an alias (the value lives elsewhere) or a value on the next line
        return None
    comment = (holder.ca.items.get(key) or [None, None, None])[2]
    comment_col = None
    if comment is not None and comment.start_mark.line == line and comment.value.strip():
        comment_col = comment.column
    return _LineEdit(line, col, comment_col, text)


def _edit_lines(text: str, edits: list[_LineEdit | None]) -> str | None:
    """``text`` with each value replaced on its own line (comments, their column where it fits,
    and anchors kept; nothing else touched), or None when some edit is not a one-line scalar."""
    if any(e is None for e in edits):
        return None
    lines = text.splitlines(keepends=True)
    for e in edits:
        assert e is not None
        line = lines[e.line]
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        end = e.comment_col if e.comment_col is not None else len(body)
        current = body[e.col:end].rstrip()
        anchor = current.partition(" ")[0] + " " if current.startswith("&") else ""
        value = anchor + e.text
        if e.comment_col is None:
            lines[e.line] = body[:e.col] + value + ending
        else:
            room = e.comment_col - e.col
            lines[e.line] = body[:e.col] + (value.ljust(room) if len(value) < room else value + " ") + body[end:] + ending
    return "".join(lines)


def dvc_set_args(changes: Iterable[Change]) -> list[str]:
    """``dvc exp run`` arguments setting the same values: ``-S key=value`` per changed key."""
    args: list[str] = []
    for c in changes:
        value = _plain(c.new)
        if isinstance(value, float):
            text = _float_text(value)
        elif isinstance(value, str) and _reads_back_plain(value):
            text = value  # unquoted: `dvc exp run $(...)` passes quotes through literally
        else:
            text = json.dumps(value)
        args += ["-S", f"{c.key}={text}"]
    return args


def _reads_back_plain(value: str) -> bool:
    """Whether YAML reads the bare word ``value`` back as the same string (no quoting needed)."""
    if not value or any(c.isspace() for c in value):
        return False
    try:
        return yaml.safe_load(value) == value
    except yaml.YAMLError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lpr params``."""
    sub = parser.add_subparsers(dest="params_command", metavar="ACTION", required=True)
    p = sub.add_parser("apply", help="check overrides against params.yaml and write them into it",
                       description="Check overrides (a preset, a JSON object, KEY=VALUE pairs) against params.yaml "
                                   "and write them, keeping its comments and anchors.")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default params.yaml)")
    p.add_argument("--preset", help="a preset name (presets/<name>.yaml beside the params file) or a YAML file")
    p.add_argument("--json", dest="json_text", help='a JSON object, e.g. \'{"train_encoder.train.lr": 0.003}\'')
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="one override (repeatable), e.g. train_encoder.train.lr=0.003")
    p.add_argument("--check", action="store_true", help="check only; write nothing")
    p.add_argument("--dvc-args", action="store_true",
                   help="write nothing; print the `-S key=value` arguments of `dvc exp run` instead")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``lpr params``: exit 0 when applied, 2 on a bad key, type or value."""
    try:
        overrides = collect_overrides(preset=args.preset, json_text=args.json_text, sets=args.sets,
                                      params_path=args.params)
        where = f"{args.params} (preset {args.preset})" if args.preset else str(args.params)
        changes = apply_overrides(args.params, overrides, write=not (args.check or args.dvc_args), where=where)
    except ConfigError as exc:
        log.error("lpr params: %s", exc)
        return 2
    if args.dvc_args:
        print(" ".join(shlex.quote(a) for a in dvc_set_args(changes)))
        return 0
    verb = "would change" if args.check else "changed"
    if not changes:
        print(f"{args.params}: nothing to change ({len(overrides)} override(s) already in place)")
    for change in changes:
        print(f"{args.params}: {verb} {change}")
    return 0
