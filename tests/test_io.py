"""Atomic outputs (lpr_core.io): whole or absent, never torn, never missing, leftovers cleaned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lpr_core import io


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_atomic_write_text_and_json_replace_the_target_and_leave_no_temp(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    io.atomic_write_json(target, {"b": 1, "a": Path("x")})
    assert json.loads(target.read_text()) == {"a": "x", "b": 1}
    assert target.read_text().endswith("\n")
    io.atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert _hidden(target.parent) == []


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.pt"
    io.atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), io.atomic_file(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("killed halfway")
    assert target.read_bytes() == b"old"
    assert _hidden(tmp_path) == []


def test_atomic_file_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"), io.atomic_file(tmp_path / "f", "r"):
        pass


def test_atomic_dir_replaces_the_old_directory_whole(tmp_path):
    out = tmp_path / "index"
    with io.atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with io.atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    with pytest.raises(KeyError), io.atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("3")
        raise KeyError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert _hidden(tmp_path) == []


def test_publish_dir_never_leaves_a_window_without_the_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "v").write_text("0")
    missing = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if not (out / "v").exists():
                missing.append(time.perf_counter())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(1, 150):
            with io.atomic_dir(out, fsync=False) as tmp:
                (tmp / "v").write_text(str(i))
    finally:
        stop.set()
        watcher.join()
    assert (out / "v").read_text() == "149"
    assert missing == [], f"the directory was absent {len(missing)} times while being replaced"


def test_publish_dir_over_a_file_or_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_text("x")
    dst = tmp_path / "dst"
    dst.write_text("a file in the way")
    io.publish_dir(src, dst)
    assert (dst / "x").read_text() == "x" and not src.exists()


_SLOW_WRITER = """
import sys, time
from lpr_core import io
with io.atomic_file(sys.argv[1]) as fh:
    fh.write(b"partial")
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_writer_leaves_the_old_file_and_its_leftover_is_cleaned_next_time(tmp_path):
    target = tmp_path / "checkpoint.pt"
    io.atomic_write_bytes(target, b"step 100")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    assert proc.stdout.readline().strip() == b"writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert target.read_bytes() == b"step 100"
    leftovers = [n for n in _hidden(tmp_path) if n.startswith(".checkpoint.pt.tmp-")]
    assert len(leftovers) == 1, _hidden(tmp_path)
    assert io.clean_leftovers(target) == [tmp_path / leftovers[0]]
    io.atomic_write_bytes(target, b"step 200")
    assert target.read_bytes() == b"step 200" and _hidden(tmp_path) == []


def test_clean_leftovers_spares_a_live_writer_and_other_targets(tmp_path):
    live = tmp_path / f".a.tmp-{os.getpid()}-deadbeef"
    live.write_text("mine")
    other = tmp_path / ".b.tmp-1-deadbeef"
    other.write_text("another target")
    assert io.clean_leftovers(tmp_path / "a") == []
    assert live.exists() and other.exists()
