"""The loopback image server: exact bytes, every fault kind as declared, request counts, ports."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from lpr_core import cli
from lpr_core.synth.faults import FaultKind, fault_for
from lpr_core.synth.layout import source_path
from lpr_core.synth.server import ImageServer, PortInUseError

from .helpers import url_ids

pytestmark = pytest.mark.integration


def fetch(url: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def all_ids(world) -> list[str]:
    return [i for k in ("train_frame_urls", "train_image_urls", "test_frame_urls", "test_image_urls")
            for i in url_ids(world, k)]


def test_serves_every_url_with_the_source_bytes(tiny_world):
    w = tiny_world.out_dir
    with ImageServer(w) as srv:
        assert srv.port > 0 and srv.url_prefix == f"http://127.0.0.1:{srv.port}/lpr/"
        items = all_ids(w)
        with ThreadPoolExecutor(8) as ex:
            got = list(ex.map(lambda i: fetch(f"{srv.url_prefix}{i}.jpg"), items))
        for item, (status, body) in zip(items, got):
            assert status == 200 and body == source_path(w, item).read_bytes(), item
        # any path prefix works: only the last component names the item
        assert fetch(f"http://127.0.0.1:{srv.port}/other/dir/{items[0]}.jpg")[1] == source_path(w, items[0]).read_bytes()
        assert fetch(f"{srv.url_prefix}{items[0]}.jpg", method="HEAD") == (200, b"")
        unknown = "12345678-1234-4234-8234-123456789abc"
        for path in (f"{unknown}.jpg", "../../etc/passwd", "x.png", f"{items[0]}.jpeg", "%2e%2e%2fworld.json.jpg"):
            assert fetch(srv.url_prefix + path)[0] == 404, path
        assert srv.request_count(items[0]) == 3
        assert srv.request_count(unknown) == 1


@pytest.mark.parametrize("kind", list(FaultKind))
def test_each_fault_kind_behaves_as_declared(tiny_world, kind):
    w = tiny_world.out_dir
    item = url_ids(w, "test_image_urls")[0]
    frame = url_ids(w, "test_frame_urls")[0]
    src = source_path(w, item).read_bytes()
    with ImageServer(w, fault_rate=1.0, kinds=(kind,), slow_seconds=3.0) as srv:
        assert srv.fault_for(item) is kind and srv.fault_for(frame) is kind
        url = f"{srv.url_prefix}{item}.jpg"
        if kind is FaultKind.SLOW:
            t0 = time.monotonic()
            with pytest.raises((TimeoutError, urllib.error.URLError)):
                fetch(url, timeout=0.5)
            assert time.monotonic() - t0 < 2.5
            first = None
        else:
            first = fetch(url)
        t0 = time.monotonic()
        retry = fetch(url)
        assert time.monotonic() - t0 < 2.0
        assert srv.request_count(item) == 2
    if kind is FaultKind.NOT_FOUND:
        assert first[0] == retry[0] == 404
    elif kind is FaultKind.SERVER_ERROR:
        assert first[0] == retry[0] == 500
    elif kind is FaultKind.TRANSIENT:
        assert first[0] == 503 and retry == (200, src)
    elif kind is FaultKind.SLOW:
        assert retry == (200, src)
    elif kind is FaultKind.TRUNCATED:
        assert first == retry and first[0] == 200 and src.startswith(first[1]) and len(first[1]) < len(src)
    elif kind is FaultKind.CORRUPT:
        assert first == retry and first[0] == 200 and first[1][:2] != b"\xff\xd8" and first[1] != src
    assert (retry == (200, src)) == kind.recoverable


def test_outcomes_of_a_mixed_fault_rate_are_predictable(tiny_world):
    w = tiny_world.out_dir
    items = all_ids(w)[::3]
    kinds = tuple(k for k in FaultKind if k is not FaultKind.SLOW)
    with ImageServer(w, fault_rate=0.5, seed=11, kinds=kinds) as srv:
        for item in items:
            src = source_path(w, item).read_bytes()
            expected = fault_for(item, 0.5, 11, kinds)
            first, retry = fetch(f"{srv.url_prefix}{item}.jpg"), fetch(f"{srv.url_prefix}{item}.jpg")
            assert (first == (200, src)) == (expected is None), (item, expected)
            assert (retry == (200, src)) == (expected is None or expected.recoverable), (item, expected)
        assert sum(fault_for(i, 0.5, 11, kinds) is not None for i in items) > 5


def test_request_counts_are_thread_safe(tiny_world):
    item = url_ids(tiny_world.out_dir, "test_image_urls")[0]
    with ImageServer(tiny_world.out_dir) as srv:
        with ThreadPoolExecutor(16) as ex:
            statuses = list(ex.map(lambda _: fetch(f"{srv.url_prefix}{item}.jpg")[0], range(200)))
        assert statuses == [200] * 200
        assert srv.request_count(item) == 200 and srv.request_counts() == {item: 200}
        srv.reset_counts()
        assert srv.request_count(item) == 0


def test_port_in_use_is_a_clear_error_and_stop_frees_the_port(tiny_world, capsys):
    w = tiny_world.out_dir
    with ImageServer(w) as first:
        with pytest.raises(PortInUseError, match=f"port {first.port} .* already in use"):
            ImageServer(w, port=first.port).start()
        assert cli.main(["serve", str(w), "--port", str(first.port)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "already in use" in err and "Traceback" not in err
        port = first.port
    with ImageServer(w, port=port) as again:  # the port was released
        assert again.port == port


def test_binds_loopback_only_and_needs_a_world(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        ImageServer(tiny_world.out_dir, host="0.0.0.0")
    with pytest.raises(FileNotFoundError, match="not a synthetic world"):
        ImageServer(tmp_path)
    with ImageServer(tiny_world.out_dir) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=2):
            pass
        assert srv._httpd.server_address[0] == "127.0.0.1"


def test_stop_wakes_stalled_slow_answers(tiny_world):
    item = url_ids(tiny_world.out_dir, "test_image_urls")[0]
    srv = ImageServer(tiny_world.out_dir, fault_rate=1.0, kinds=(FaultKind.SLOW,), slow_seconds=60).start()
    with ThreadPoolExecutor(1) as ex:
        fut = ex.submit(fetch, f"{srv.url_prefix}{item}.jpg", 30.0)
        while srv.request_count(item) == 0:
            time.sleep(0.02)
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 5
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            fut.result(timeout=10)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cli_serves_and_rewrites_urls_until_interrupted(tmp_path):
    from lpr_core.synth.world import WorldConfig, generate_world

    s = generate_world(tmp_path / "w", size=WorldConfig("micro", 1, 1, (2, 2), (1, 1), 1.0, (2, 2)))
    # Ctrl-C reaches the server as a terminal would deliver it: a child inherits an ignored SIGINT
    # (and Python then installs no KeyboardInterrupt handler), so give it the default disposition
    proc = subprocess.Popen([sys.executable, "-m", "lpr_core.cli", "serve", str(s.out_dir), "--port", "0",
                             "--rewrite-urls"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    try:
        assert proc.stdout.readline().startswith("rewrote ")
        line = proc.stdout.readline()
        assert line.startswith("serving ")
        url = url_ids(s.out_dir, "test_image_urls")
        prefix = s.files["test_image_urls"].read_text().splitlines()[0].rsplit("/", 1)[0] + "/"
        assert prefix in line
        assert fetch(f"{prefix}{url[0]}.jpg") == (200, source_path(s.out_dir, url[0]).read_bytes())
    finally:
        proc.send_signal(2)  # SIGINT, as Ctrl-C
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a server behind
            proc.communicate()
            raise
    assert proc.returncode == 0, err
    assert "Traceback" not in err
