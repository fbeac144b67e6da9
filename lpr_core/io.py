"""Atomic outputs: a file or a directory appears whole or not at all, and never goes missing.

Every stage output is written through this module, so a stage killed at any instant (``dvc repro``
interrupted, a pod preempted) leaves either the previous output or the new one, never a torn file,
an empty directory or nothing at all:

- a file is written to a hidden temporary sibling (``.<name>.tmp-<pid>-<random>``), flushed and
  ``fsync``-ed, then renamed over its target (``os.replace`` is atomic on POSIX), and the parent
  directory is ``fsync``-ed so the rename itself survives a power loss;
- a directory is built in a temporary sibling and swapped with the old one in one step
  (``renameat2(RENAME_EXCHANGE)`` on Linux); where the file system cannot exchange, the old
  directory is renamed aside first, leaving a window of two renames in which the target is absent;
- leftovers of killed writers (temporary siblings whose process is gone) are removed the next time
  the same target is written (:func:`clean_leftovers`).

Example::

    from lpr_core import io

    io.atomic_write_json(out / "summary.json", summary)
    with io.atomic_dir(out / "index") as tmp:
        write_shards(tmp)                      # published only when the block succeeds
    with io.atomic_file(out / "model.pt") as fh:
        torch.save(state, fh)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "tmp_sibling",
    "fsync_dir",
    "atomic_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_dir",
    "publish_dir",
    "clean_leftovers",
]

#: ``.<name>.tmp-<pid>-<hex>`` (being written) and ``.<name>.old-<pid>-<hex>`` (being removed).
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def tmp_sibling(path: str | Path) -> Path:
    """A fresh hidden temporary path beside ``path`` (same file system, so a rename is atomic)."""
    return _sibling(Path(path), "tmp")


def fsync_dir(path: str | Path) -> None:
    """``fsync`` a directory, so the renames and creations in it are durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def clean_leftovers(path: str | Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` left by writers that no longer run.

    Only ``.<name>.tmp-<pid>-*`` and ``.<name>.old-<pid>-*`` entries whose process is gone are
    removed; a concurrent writer's temporary file is left alone.

    Returns:
        The removed paths.
    """
    path = Path(path)
    removed: list[Path] = []
    try:
        entries = list(path.parent.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if not m or m.group("name") != path.name or _pid_alive(int(m.group("pid"))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", *, fsync: bool = True,
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` keeps its old content.

    Args:
        path: the target file (its parent directories are created).
        mode: ``"wb"`` or ``"w"``.
        fsync: flush the file and its directory to disk before and after the rename.
        encoding: text mode only (default UTF-8, ``\\n`` newlines).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = tmp_sibling(path)
    text = {"encoding": encoding or "utf-8", "newline": "\n"} if mode == "w" else {}
    try:
        with open(tmp, mode, **text) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_file(path, "wb", fsync=fsync) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` newlines) to ``path`` atomically; returns ``path``."""
    with atomic_file(path, "w", fsync=fsync) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1, sort_keys: bool = True,
                      fsync: bool = True) -> Path:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically; returns ``path``.

    Values JSON cannot represent (paths, numpy scalars) are written with ``str``.
    """
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=str) + "\n",
                             fsync=fsync)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            try:
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
            except OSError:
                pass
        fsync_dir(dirpath)


def publish_dir(tmp: str | Path, dst: str | Path, *, fsync: bool = True) -> Path:
    """Make the finished directory ``tmp`` the directory ``dst``, replacing an older ``dst``.

    ``dst`` never disappears when the file system can exchange two paths (Linux ``renameat2``);
    elsewhere the old directory is renamed aside first (two renames). The old content is removed.

    Args:
        tmp: the finished directory (a sibling of ``dst``: same file system).
        dst: the target directory.
        fsync: flush every file of ``tmp`` and the parent directory to disk.

    Returns:
        ``dst``.
    """
    tmp, dst = Path(tmp), Path(dst)
    if fsync:
        _fsync_tree(tmp)
    if dst.is_dir() and not dst.is_symlink():
        if _exchange(tmp, dst):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old content
        else:
            old = _sibling(dst, "old")
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
    else:
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        os.replace(tmp, dst)
    if fsync:
        fsync_dir(dst.parent)
    return dst


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Yield an empty temporary sibling directory of ``path``; on success it becomes ``path``.

    On an exception the temporary directory is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, path, fsync=fsync)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
