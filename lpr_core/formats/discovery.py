"""Find the LPR4M files of a release folder, however it was unpacked.

The release may be unpacked flat (every file in one folder) or into sub-folders (``train/...``,
``test/annotations/...``); :func:`find_lpr4m_files` looks through the whole tree and answers, per
file kind (a key of :data:`~lpr_core.formats.schema.FILE_PATTERNS`), the one set of files to read.

A kind has one *candidate*: one file, or for ``training_videoinfo`` (which may come in parts)
every part in one folder. Two candidates for one kind (the same URL list in two folders, a second
copy of a JSON file, videoinfo parts spread over two folders) cannot be told apart safely:
:class:`DiscoveryError` names both paths, and nothing is read. Hidden folders (a leading ``.``:
version control, temporary copies) are not searched.

``lpr inspect``, the download, validate and prepare stages (and so everything after them) and the
synthetic world's tools all call :func:`find_lpr4m_files`: one answer everywhere.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from lpr_core.formats.report import FormatError
from lpr_core.formats.schema import FILE_PATTERNS

__all__ = ["DiscoveryError", "MULTI_PART_KINDS", "find_lpr4m_files", "find_one"]

#: Kinds whose candidate may be several part files (all in one folder, read in name order).
MULTI_PART_KINDS = frozenset({"videoinfo"})


class DiscoveryError(FormatError):
    """Two candidates for one LPR4M file kind in a release folder.

    Attributes:
        kind: the file kind.
        paths: one file of each candidate, in path order.
    """

    def __init__(self, directory: str | Path, kind: str, paths: list[Path]) -> None:
        listed = " and ".join(str(p) for p in paths[:2]) + (f" (and {len(paths) - 2} more)" if len(paths) > 2 else "")
        super().__init__(
            str(directory), 0,
            f"two candidates for the {kind} file ({FILE_PATTERNS[kind]}): {listed}; keep one (move or delete the other)",
        )
        self.kind = kind
        self.paths = list(paths)

    def __reduce__(self):  # keep the attributes when the error crosses a process boundary
        return (DiscoveryError, (self.path, self.kind, self.paths))


def _walk(directory: Path) -> list[Path]:
    """Every file under ``directory`` (hidden folders left out), sorted by path."""
    files: list[Path] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in names)
    return sorted(files)


def find_lpr4m_files(directory: str | Path) -> dict[str, list[Path]]:
    """The LPR4M files under ``directory`` (searched recursively), by kind.

    Args:
        directory: the release folder (or a synthetic world).

    Returns:
        kind -> its files (one path; for ``videoinfo`` every part, in name order); kinds with no
        file are left out.

    Raises:
        NotADirectoryError: ``directory`` is not a directory.
        DiscoveryError: two candidates for one kind (both paths named).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"not a directory: {directory}")
    matches: dict[str, list[Path]] = {}
    for path in _walk(directory):
        for kind, pattern in FILE_PATTERNS.items():
            if fnmatch.fnmatchcase(path.name, pattern) and path.is_file():
                matches.setdefault(kind, []).append(path)
    found: dict[str, list[Path]] = {}
    for kind in FILE_PATTERNS:  # the patterns' order, as before
        paths = matches.get(kind)
        if not paths:
            continue
        if kind in MULTI_PART_KINDS:
            folders = sorted({p.parent for p in paths})
            if len(folders) > 1:
                raise DiscoveryError(directory, kind, [next(p for p in paths if p.parent == f) for f in folders])
            found[kind] = sorted(paths, key=lambda p: p.name)
        elif len(paths) > 1:
            raise DiscoveryError(directory, kind, paths)
        else:
            found[kind] = paths
    return found


def find_one(directory: str | Path, kind: str) -> Path:
    """The single file of a kind that is not split in parts (see :func:`find_lpr4m_files`).

    Raises:
        FileNotFoundError: no file of that kind under ``directory``.
        DiscoveryError: two candidates for it.
    """
    if kind in MULTI_PART_KINDS:
        raise ValueError(f"{kind} may come in parts: use find_lpr4m_files")
    files = find_lpr4m_files(directory).get(kind)
    if not files:
        raise FileNotFoundError(f"{directory}: no {kind} file ({FILE_PATTERNS[kind]})")
    return files[0]
