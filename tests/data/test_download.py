"""lpr_core.data.download: URL lists, the per-sample retry pass and the orphan guard.

A tiny HTTP server on 127.0.0.1 serves JPEGs the test writes, and fails in controlled ways
(by the first path component): ``ok``, ``flaky`` (503 twice, then the image), ``slow`` (the first
answer stalls past the client's timeout), ``404``, ``trunc`` (a JPEG cut in its scan data),
``garbage``, ``short`` (fewer bytes than its Content-Length), ``robots`` (an X-Robots-Tag: noai
header). img2dataset itself runs in ``tests/stages/test_download.py``.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lpr_core.data.boxes import keep_ratio_size
from lpr_core.data.download import (
    DownloadError,
    DownloadParams,
    RetryPassParams,
    fetch,
    find_url_lists,
    make_resizer,
    prepare_input,
    process_image,
    read_url_list,
    retry_pass,
)
from lpr_core.data.manifest import check_jpeg
from lpr_core.formats.report import FormatError

REPO = Path(__file__).resolve().parents[2]


def source_jpeg(item_id: str, size: tuple[int, int] = (300, 200)) -> bytes:
    rng = np.random.default_rng(uuid.UUID(item_id).int % 2**32)
    img = np.repeat(np.repeat(rng.integers(0, 255, (size[1] // 10, size[0] // 10, 3), dtype=np.uint8), 10, 0), 10, 1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=92)
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
              length: int | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "image/jpeg" if status == 200 else "text/plain")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        mode, name = self.path.strip("/").split("/")[-2:]
        item_id = name[:-4]
        with self.server.lock:
            self.server.counts[self.path] += 1
            n = self.server.counts[self.path]
        data = source_jpeg(item_id)
        if mode == "404":
            self._send(404, b"not found\n")
        elif mode == "flaky" and n <= 2:
            self._send(503, b"busy\n")
        elif mode == "slow" and n == 1:
            time.sleep(1.0)
            self._send(200, data)
        elif mode == "trunc":
            sos = data.find(b"\xff\xda")
            self._send(200, data[: sos + (len(data) - sos) // 2])
        elif mode == "garbage":
            self._send(200, bytes(range(1, 256)) * 8)
        elif mode == "short":
            self._send(200, data[:100], length=len(data))
        elif mode == "robots":
            self._send(200, data, {"X-Robots-Tag": "noai, noimageai"})
        else:
            self._send(200, data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    counts: Counter
    lock: threading.Lock


@pytest.fixture(scope="module")
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.counts = Counter()
    srv.lock = threading.Lock()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def url_of(server, mode: str, n: int) -> tuple[str, str]:
    item_id = str(uuid.UUID(int=hash((mode, n)) % 2**128))
    return f"{server.base}/{mode}/{item_id}.jpg", item_id


def count(server, url: str) -> int:
    with server.lock:
        return server.counts[url[len(server.base):]]


# the test server is on loopback: the fetch guard must allow it
FAST = DownloadParams(timeout=0.3, max_fetch_seconds=5.0, thread_count=4, allow_private_networks=("127.0.0.1",),
                      retry_pass=RetryPassParams(attempts=3, backoff=0.01))
LOOPBACK = FAST.fetch_policy


# -------------------------------------------------------------------------------------- fetch


def test_fetch_reports_each_failure_with_its_reason(server):
    url, item_id = url_of(server, "ok", 0)
    data, err = fetch(url, 2.0, policy=LOOPBACK)
    assert err is None and data == source_jpeg(item_id)
    assert fetch(url_of(server, "404", 0)[0], 2.0, policy=LOOPBACK) == (None, "http_404: HTTP Error 404: Not Found")
    data, err = fetch(url_of(server, "slow", 0)[0], 0.3, policy=LOOPBACK)
    assert data is None and err.startswith("timeout: ")
    data, err = fetch(url_of(server, "short", 0)[0], 2.0, policy=LOOPBACK)
    assert data is None and err.startswith("incomplete: ")
    assert fetch(f"file:///etc/{uuid.uuid4()}.jpg", 2.0)[1].startswith("other: unsupported URL scheme")
    with socket_closed_port() as port:
        data, err = fetch(f"http://127.0.0.1:{port}/x/{uuid.uuid4()}.jpg", 2.0, policy=LOOPBACK)
    assert data is None and err.startswith("connection: ")


def test_fetch_honours_x_robots_tag_only_when_asked(server):
    url, item_id = url_of(server, "robots", 0)
    assert fetch(url, 2.0, policy=LOOPBACK) == (source_jpeg(item_id), None)
    data, err = fetch(url, 2.0, ("noai",), LOOPBACK)
    assert data is None and err.startswith("disallowed: ")


class socket_closed_port:
    """A loopback port with nothing listening."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def __exit__(self, *exc: object) -> None:
        pass


# ------------------------------------------------------------------------------ process_image


@pytest.fixture(scope="module")
def resizer():
    return make_resizer(FAST)


def test_process_image_resizes_exactly_like_img2dataset(resizer):
    from img2dataset.resizer import Resizer

    data = source_jpeg(str(uuid.UUID(int=7)), (301, 173))
    img, w, h, ow, oh = process_image(data, resizer)
    reference = Resizer(FAST.image_size, "keep_ratio", FAST.resize_only_if_bigger, encode_quality=FAST.encode_quality)
    ref_img, rw, rh, _, _, err = reference(io.BytesIO(data))
    assert err is None and img == ref_img and (w, h) == (rw, rh)
    assert (ow, oh) == (300, 170)  # the test image is built from 10-pixel blocks
    ew, eh = keep_ratio_size(ow, oh, FAST.image_size, FAST.resize_only_if_bigger)
    assert (w, h) == (ew, eh)
    assert check_jpeg(img, w, h) is None


def test_process_image_rejects_truncated_and_garbage_bodies(resizer):
    data = source_jpeg(str(uuid.UUID(int=8)))
    sos = data.find(b"\xff\xda")
    err = process_image(data[: sos + (len(data) - sos) // 2], resizer)
    assert isinstance(err, str) and err.startswith("decode: ")
    err = process_image(b"\x00garbage" * 50, resizer)
    assert err == "decode: UnidentifiedImageError: cannot identify image file <_io.BytesIO object>"


def test_img2dataset_decoder_refuses_a_truncated_jpeg(resizer):
    # img2dataset marks a truncated body failed only because OpenCV refuses it; if an OpenCV
    # update made it lenient, truncated images would be reported as successes: catch that here.
    data = source_jpeg(str(uuid.UUID(int=9)))
    sos = data.find(b"\xff\xda")
    *_, err = resizer(io.BytesIO(data[: sos + (len(data) - sos) // 2]))
    assert err is not None


# --------------------------------------------------------------------------------- retry pass


def test_retry_pass_recovers_transient_and_records_permanent_failures(server, tmp_path):
    out = tmp_path / "out"
    folder = out / "test_images"
    failed = [url_of(server, mode, 1) for mode in ("ok", "flaky", "slow", "404", "trunc", "garbage")]
    got = retry_pass(failed, folder, out, FAST)
    assert set(got) == {u for u, _ in failed}
    by_mode = {u.split("/")[-2]: got[u] for u, _ in failed}
    for mode in ("ok", "flaky", "slow"):
        o = by_mode[mode]
        assert o.ok and o.source == "retry", (mode, o)
        item_id = Path(o.path).stem
        assert o.path == f"test_images/retried/{item_id}.jpg"
        data = (out / o.path).read_bytes()
        assert check_jpeg(data, o.width, o.height) is None
        assert min(o.width, o.height) == FAST.image_size
        assert (o.original_width, o.original_height) == (300, 200)
    assert by_mode["404"].error.startswith("http_404: ")
    assert by_mode["trunc"].error.startswith("decode: ")
    assert by_mode["garbage"].error.startswith("decode: ")
    # a 404 is permanent: asked once; a bad body may be a transient glitch: asked every attempt
    assert count(server, failed[3][0]) == 1
    assert count(server, failed[4][0]) == FAST.retry_pass.attempts
    assert count(server, failed[1][0]) == 3  # two 503s, then the image
    leftovers = [p.name for p in (folder / "retried").iterdir() if p.name.startswith(".")]
    assert leftovers == []

    # a rerun keeps the recovered samples without asking again, and retries the failures
    before = {u: count(server, u) for u, _ in failed}
    again = retry_pass(failed, folder, out, FAST)
    assert {u: o.ok for u, o in again.items()} == {u: o.ok for u, o in got.items()}
    assert count(server, failed[0][0]) == before[failed[0][0]]
    assert count(server, failed[3][0]) == before[failed[3][0]] + 1


def test_retry_pass_refetches_a_damaged_recovered_sample(server, tmp_path):
    out = tmp_path / "out"
    folder = out / "train_images"
    failed = [url_of(server, "ok", 2)]
    o = retry_pass(failed, folder, out, FAST)[failed[0][0]]
    path = out / o.path
    path.write_bytes(path.read_bytes()[:100])
    n = count(server, failed[0][0])
    o2 = retry_pass(failed, folder, out, FAST)[failed[0][0]]
    assert o2.ok and count(server, failed[0][0]) == n + 1
    assert check_jpeg(path.read_bytes(), o2.width, o2.height) is None


def test_retry_pass_disabled_header_check_and_enabled(server, tmp_path):
    failed = [url_of(server, "robots", 3)]
    assert retry_pass(failed, tmp_path / "a", tmp_path, FAST)[failed[0][0]].ok
    strict = DownloadParams(timeout=1.0, disallowed_header_directives=("noai",), allow_private_networks=True,
                            retry_pass=RetryPassParams(attempts=2, backoff=0.0))
    o = retry_pass(failed, tmp_path / "b", tmp_path, strict)[failed[0][0]]
    assert not o.ok and o.error.startswith("disallowed: ")


# ---------------------------------------------------------------------------------- URL lists


FRAME = "http://127.0.0.1:9/lpr/0a1b2c3d-0000-4000-8000-00000000abcd-1000-2000-{:04d}.jpg"


def test_read_url_list_drops_duplicates_and_blank_lines(tmp_path):
    path = tmp_path / "test_frame_url_4.txt"
    path.write_text(f"{FRAME.format(0)}\n{FRAME.format(1)}\n\n{FRAME.format(0)}\r\n{FRAME.format(2)}\n")
    ul = read_url_list(path, "test_frame_urls")
    assert ul.urls == (FRAME.format(0), FRAME.format(1), FRAME.format(2))
    assert (ul.duplicates, ul.split, ul.kind, ul.folder_name) == (1, "test", "frames", "test_frames")


def test_read_url_list_names_the_bad_line(tmp_path):
    path = tmp_path / "training_image_url_3.txt"
    path.write_text(f"http://h/{uuid.UUID(int=1)}.jpg\nhttp://h/../../x.jpg\n")
    with pytest.raises(FormatError, match=rf"{path.name}:2: invalid image URL"):
        read_url_list(path, "train_image_urls")
    with pytest.raises(FormatError, match=":1: invalid frame URL"):
        read_url_list(path, "train_frame_urls")  # an image URL in a frame list
    path.write_text(f"http://h/{uuid.UUID(int=1)}.jpg\n\nfile:///etc/{uuid.UUID(int=2)}.jpg\n")
    with pytest.raises(DownloadError, match=rf"{path.name}:3: not an http\(s\) URL"):
        read_url_list(path, "train_image_urls")


def test_find_url_lists(tmp_path):
    (tmp_path / "test_image_url_3.txt").write_text("")
    found = find_url_lists(tmp_path)
    assert found["test_image_urls"] == tmp_path / "test_image_url_3.txt"
    assert found["train_frame_urls"] is None
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_frame_url_5.txt").write_text("")  # a release unpacked into sub-folders
    assert find_url_lists(tmp_path)["test_frame_urls"] == tmp_path / "test" / "test_frame_url_5.txt"
    (tmp_path / "test" / "test_image_url_4.txt").write_text("")
    with pytest.raises(DownloadError, match="two candidates for the test_image_urls file") as err:
        find_url_lists(tmp_path)
    assert str(tmp_path / "test_image_url_3.txt") in str(err.value)
    assert str(tmp_path / "test" / "test_image_url_4.txt") in str(err.value)
    with pytest.raises(DownloadError, match="not a directory"):
        find_url_lists(tmp_path / "nope")


def test_prepare_input_keeps_rewrites_or_refuses(tmp_path):
    src = tmp_path / "test_frame_url_2.txt"
    src.write_text(f"{FRAME.format(0)}\n{FRAME.format(1)}\n")
    folder = tmp_path / "out" / "test_frames"
    folder.mkdir(parents=True)
    ul = read_url_list(src, "test_frame_urls")
    path = prepare_input(ul, folder, FAST)
    import pyarrow.parquet as pq

    assert pq.read_table(path).column("url").to_pylist() == list(ul.urls)
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert prepare_input(ul, folder, FAST) == path and path.stat().st_mtime_ns == mtime  # unchanged
    other = DownloadParams(image_size=64, allow_private_networks=False)
    prepare_input(ul, folder, other)  # no shard yet: rewritten for the new settings
    (folder / "00000.parquet").write_bytes(b"")
    (folder / "00000_stats.json").write_text("{}")
    with pytest.raises(DownloadError, match="holds shards of a different URL list or settings"):
        prepare_input(ul, folder, FAST)


# ------------------------------------------------------------------------------- orphan guard

_GUARDED = """
import os, signal, subprocess, sys
from lpr_core.data.download import orphan_guard
with orphan_guard():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(child.pid, flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the guard needs Linux /proc")
@pytest.mark.parametrize("how", ["kill", "exit"])
def test_orphan_guard_kills_children_only_when_the_process_dies(how):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _GUARDED, how], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == (-signal.SIGKILL if how == "kill" else 0), proc.stderr
    child = int(proc.stdout.split()[0])
    try:
        # killed: the guard acts within a second; alive: give a wrong kill the time to happen
        deadline = time.monotonic() + (10 if how == "kill" else 1.5)
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(child) == (how == "exit")
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
