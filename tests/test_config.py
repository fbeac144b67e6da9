"""lpr_core.config: one params.yaml section -> a frozen dataclass, unknown keys rejected."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from lpr_core.config import ConfigError, from_mapping, load_params, load_section, to_mapping
from lpr_core.data.download import DownloadParams

REPO = Path(__file__).resolve().parents[1]
#: the one download key without a default (the fetch guard is said, never assumed)
GUARD = {"allow_private_networks": False}


@dataclass(frozen=True)
class Inner:
    attempts: int = 3
    backoff: float = 0.5


@dataclass(frozen=True)
class Section:
    size: int
    mode: Literal["a", "b"] = "a"
    ratio: float = 1.0
    flag: bool = False
    name: str = "x"
    tags: tuple[str, ...] = ()
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_download_section_of_the_repository_params_loads():
    params = load_section(DownloadParams, "download", REPO / "params.yaml")
    assert params.resize_mode == "keep_ratio"
    assert params.disallowed_header_directives == ()
    # every key of the section is a field: nothing in params.yaml is silently ignored
    raw = load_params(REPO / "params.yaml")["download"]
    assert set(raw) == {f.name for f in dataclasses.fields(DownloadParams)}


def test_full_section_converts_types(tmp_path):
    path = write(tmp_path, "s:\n  size: 4\n  mode: b\n  ratio: 2\n  flag: true\n  tags: [p, q]\n"
                           "  limit: 7\n  inner: {attempts: 5}\n")
    s = load_section(Section, "s", path)
    assert s == Section(size=4, mode="b", ratio=2.0, flag=True, tags=("p", "q"), limit=7, inner=Inner(5, 0.5))
    assert isinstance(s.ratio, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.size = 5  # type: ignore[misc]


def test_a_section_with_only_its_required_keys_gives_defaults(tmp_path):
    path = write(tmp_path, "download:\n  allow_private_networks: false  # the fetch guard has no default\nother: {}\n")
    assert load_section(DownloadParams, "download", path) == DownloadParams(allow_private_networks=False)
    empty = write(tmp_path, "download:\n  # nothing yet\n")
    with pytest.raises(ConfigError, match="download: missing required key 'allow_private_networks'"):
        load_section(DownloadParams, "download", empty)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("s:\n  size: 1\n  sise: 2\n", "unknown key(s) 'sise'"),
        ("s:\n  size: 1\n  inner: {attempts: 1, backof: 2}\n", "s.inner: unknown key(s) 'backof'"),
        ("s:\n  mode: a\n", "missing required key 'size'"),
        ("s:\n  size: '3'\n", "s.size: expected an integer, got '3'"),
        ("s:\n  size: true\n", "s.size: expected an integer"),
        ("s:\n  size: 1\n  mode: c\n", "s.mode: expected one of 'a', 'b', got 'c'"),
        ("s:\n  size: 1\n  flag: 1\n", "s.flag: expected true or false"),
        ("s:\n  size: 1\n  tags: p\n", "s.tags: expected a list"),
        ("s:\n  size: 1\n  tags: [p, 3]\n", "s.tags[1]: expected a string"),
        ("s:\n  size: 1\n  limit: x\n", "s.limit: expected an integer"),
        ("s:\n  size: 0\n", "size must be >= 1, got 0"),
        ("s: [1, 2]\n", "expected a mapping of keys"),
    ],
)
def test_bad_section_is_a_clear_error(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_section(Section, "s", path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_missing_section_and_file(tmp_path):
    path = write(tmp_path, "train: {}\n")
    with pytest.raises(ConfigError, match=r"no section 'download' \(sections: train\)"):
        load_section(DownloadParams, "download", path)
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_section(DownloadParams, "download", tmp_path / "nope.yaml")
    bad = write(tmp_path, "download: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_download_params_ranges_are_checked():
    with pytest.raises(ConfigError, match="retry_pass.attempts must be >= 0"):
        from_mapping(DownloadParams, {"retry_pass": {"attempts": -1}, **GUARD}, "p: download")
    with pytest.raises(ConfigError, match="resize_mode: expected one of 'keep_ratio'"):
        from_mapping(DownloadParams, {"resize_mode": "border", **GUARD}, "p: download")
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        from_mapping(DownloadParams, {"timeout": 0, **GUARD}, "p: download")


def test_to_mapping_round_trips():
    s = Section(size=2, tags=("a",), inner=Inner(1, 0.25))
    assert from_mapping(Section, to_mapping(s)) == s
    p = DownloadParams(disallowed_header_directives=("noai",), allow_private_networks=False)
    assert to_mapping(p)["disallowed_header_directives"] == ["noai"]
    assert from_mapping(DownloadParams, to_mapping(p)) == p
