"""lpr_core.data.fetch_guard: where a fetch may connect, how much it may read, how long it may take.

The servers are real and on loopback: :class:`lpr_core.synth.ImageServer` (``lpr serve``) on
127.0.0.1 and a second one on 127.0.0.2 (a loopback address of its own, so that an allow-list of
127.0.0.1 alone refuses it), and a small server on 127.0.0.1 that misbehaves by path:
``redirect-meta`` (302 to the cloud metadata address), ``redirect-lo2`` (302 to the server on
127.0.0.2), ``big`` (a valid JPEG padded far past the cap, with its Content-Length), ``big-stream``
(the same without a length), ``drip`` (the JPEG in pieces, each within the socket timeout, the whole
over the fetch's time cap), ``drip-headers`` (the status line and headers dripped), ``stall`` (no
answer for longer than the socket timeout). The last test runs the download stage, img2dataset
included, against all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from lpr_core.config import ConfigError, from_mapping, load_section, to_mapping
from lpr_core.data.download import DownloadParams, RetryPassParams, fetch
from lpr_core.data.fetch_guard import FetchPolicy, FetchRefused, address_class, guarded_get, refusal_stands
from lpr_core.data.manifest import REFUSAL_REASONS, complete_shards, format_error
from lpr_core.formats.schema import FILE_PATTERNS

REPO = Path(__file__).resolve().parents[2]
CAP = 64 << 10  # every source JPEG of the tiny world is below 30 KiB
METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


# ------------------------------------------------------------------------------------ addresses


@pytest.mark.parametrize("address, kind", [
    ("8.8.8.8", None),
    ("2001:4860:4860::8888", None),
    ("::ffff:8.8.8.8", None),          # IPv4-mapped public
    ("64:ff9b::808:808", None),        # NAT64 of a public address
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped loopback
    ("169.254.169.254", "link-local"),
    ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of the metadata address
    ("2002:a9fe:a9fe::1", "link-local"),   # 6to4 of it
    ("fe80::1", "link-local"),
    ("fe80::1%1", "link-local"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fec0::1", "private"),            # deprecated site-local
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("100.100.100.200", "not public"),  # shared address space (a cloud's metadata service lives here)
    ("240.0.0.1", "private"),
])
def test_address_class(address, kind):
    assert address_class(address) == kind


def test_policy_allows_only_what_it_lists():
    assert FetchPolicy().refusal("127.0.0.1") == "loopback"
    assert FetchPolicy().refusal("93.184.216.34") is None
    assert FetchPolicy(True).refusal("169.254.169.254") is None
    only = FetchPolicy(("127.0.0.1/32", "fd00::/8"))
    assert only.refusal("127.0.0.1") is None
    assert only.refusal("::ffff:127.0.0.1") is None  # the mapped form reaches the same address
    assert only.refusal("127.0.0.2") == "loopback"
    assert only.refusal("169.254.169.254") == "link-local"
    assert only.refusal("fd00::5") is None and only.refusal("fc00::5") == "private"
    assert FetchPolicy(()).refusal("10.0.0.1") == "private"  # an empty list allows nothing
    assert FetchPolicy(("10.0.0.5",)).refusal("10.0.0.5") is None  # a single address
    with pytest.raises(ValueError, match=r"allow_private_networks\[1\]: 'ten' is not a network"):
        FetchPolicy(("10.0.0.0/8", "ten"))


def test_download_params_of_the_guard():
    where = "params.yaml: download"
    p = from_mapping(DownloadParams, {"allow_private_networks": ["127.0.0.0/8"], "max_response_bytes": 1000,
                                      "max_fetch_seconds": 20}, where)
    assert p.fetch_policy == FetchPolicy(("127.0.0.0/8",), 1000, 20.0)
    assert from_mapping(DownloadParams, to_mapping(p)) == p
    assert from_mapping(DownloadParams, {"allow_private_networks": True}).fetch_policy.allow_private_networks is True
    assert from_mapping(DownloadParams, {"allow_private_networks": False}).fetch_policy.refusal("127.0.0.1") == "loopback"
    with pytest.raises(ConfigError, match="missing required key 'allow_private_networks'"):
        from_mapping(DownloadParams, {}, where)  # the guard is said in params.yaml, never assumed
    with pytest.raises(ConfigError, match=r"download: allow_private_networks\[0\]: '10\.0\.0\.0/33'"):
        from_mapping(DownloadParams, {"allow_private_networks": ["10.0.0.0/33"]}, where)
    with pytest.raises(ConfigError, match=r"download\.allow_private_networks: .* matches none of"):
        from_mapping(DownloadParams, {"allow_private_networks": "yes"}, where)
    with pytest.raises(ConfigError, match="max_fetch_seconds .* must be >= timeout"):
        from_mapping(DownloadParams, {"timeout": 10, "max_fetch_seconds": 5, "allow_private_networks": False}, where)
    with pytest.raises(ConfigError, match="max_response_bytes must be >= 1"):
        from_mapping(DownloadParams, {"max_response_bytes": 0, "allow_private_networks": False}, where)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'allow_private_network'"):
        from_mapping(DownloadParams, {"allow_private_network": True}, where)


def test_repository_params_allow_the_demo_and_say_real_data_must_not():
    params = load_section(DownloadParams, "download", REPO / "params.yaml")
    assert params.allow_private_networks is True  # the demo's image server is on loopback
    text = (REPO / "params.yaml").read_text()
    assert "real data must set false" in text


def test_refusal_stands_only_under_settings_as_strict():
    policy = FetchPolicy(("127.0.0.1/32",), 1000, 5.0)
    private = "refused_private_address: 127.0.0.2 (loopback) is not allowed by download.allow_private_networks"
    assert refusal_stands(private, policy)
    assert not refusal_stands(private, FetchPolicy(("127.0.0.0/8",)))
    large = "too_large: Content-Length 5000 over the cap of 1000 bytes (download.max_response_bytes)"
    assert refusal_stands(large, policy) and refusal_stands(large, FetchPolicy(True, 999, 5.0))
    assert not refusal_stands(large, FetchPolicy(True, 10_000, 5.0))
    slow = "too_slow: the fetch took longer than 5 s (download.max_fetch_seconds)"
    assert refusal_stands(slow, policy) and not refusal_stands(slow, FetchPolicy(True, 1000, 30.0))
    assert not refusal_stands("timeout: timed out", policy)
    assert not refusal_stands(None, policy)
    # the manifest keeps the guard's message as it is
    assert format_error(private) == private and format_error(slow) == slow


# -------------------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from lpr_core.synth import generate_world

    return generate_world(tmp_path_factory.mktemp("world") / "tiny", size="tiny", seed=0).out_dir


@pytest.fixture(scope="module")
def lpr_server(world):
    from lpr_core.synth import ImageServer

    with ImageServer(world) as server:
        yield server


@pytest.fixture(scope="module")
def second_server(world):
    """``lpr serve`` on 127.0.0.2: a loopback address outside an allow-list of 127.0.0.1/32."""
    from lpr_core.synth import ImageServer

    with ImageServer(world, host="127.0.0.2") as server:
        yield server


def image_ids(world: Path) -> list[str]:
    (path,) = sorted(world.glob(FILE_PATTERNS["test_image_urls"]))
    return [line.rsplit("/", 1)[1][:-4] for line in path.read_text().split()]


def padded(jpeg: bytes, size: int) -> bytes:
    """The same JPEG with COM segments after SOI, to ``size`` bytes or more: still a valid JPEG."""
    out = bytearray(jpeg[:2])
    while len(out) + len(jpeg) < size:
        chunk = b"x" * 60000
        out += b"\xff\xfe" + (len(chunk) + 2).to_bytes(2, "big") + chunk
    return bytes(out + jpeg[2:])


class _Tricky(BaseHTTPRequestHandler):
    server: _TrickyServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        mode, name = self.path.strip("/").split("/")[-2:]
        item_id = name[:-4]
        with self.server.lock:
            self.server.counts[self.path] += 1
        from lpr_core.synth import source_path

        data = source_path(self.server.world, item_id).read_bytes()
        try:
            if mode == "ok":
                self._head(200, len(data))
                self.wfile.write(data)
            elif mode == "redirect-meta":
                self._head(302, 0, {"Location": METADATA})
            elif mode == "redirect-lo2":
                self._head(302, 0, {"Location": f"{self.server.second_prefix}{name}"})
            elif mode == "big":
                body = padded(data, 4 * CAP)
                self._head(200, len(body))
                self.wfile.write(body)
            elif mode == "big-stream":  # no Content-Length: the body ends when the connection closes
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.end_headers()
                self.wfile.write(padded(data, 4 * CAP))
            elif mode == "drip":  # 8 pieces 0.25 s apart: every read within a 1 s timeout, 2 s in all
                self._head(200, len(data))
                step = -(-len(data) // 8)
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    time.sleep(0.25)
            elif mode == "drip-headers":
                head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(data)}\r\n" + "".join(
                    f"X-Pad-{i}: {i}\r\n" for i in range(8)) + "\r\n"
                for line in head.encode().splitlines(keepends=True):
                    self.wfile.write(line)
                    self.wfile.flush()
                    time.sleep(0.25)
                self.wfile.write(data)
            elif mode == "stall":
                time.sleep(2.0)
                self._head(200, len(data))
                self.wfile.write(data)
            else:
                self._head(404, 0)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _head(self, status: int, length: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()


class _TrickyServer(ThreadingHTTPServer):
    daemon_threads = True
    world: Path
    second_prefix: str
    counts: Counter
    lock: threading.Lock


@pytest.fixture(scope="module")
def tricky(world, second_server):
    srv = _TrickyServer(("127.0.0.1", 0), _Tricky)
    srv.world, srv.second_prefix = world, second_server.url_prefix
    srv.counts, srv.lock = Counter(), threading.Lock()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: ``(ca, cert, key)`` PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lpr test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls(world, second_server, tmp_path_factory):
    """The misbehaving server over HTTPS (its CA in ``.ca``)."""
    import ssl

    ca, cert, key = _certificates(tmp_path_factory.mktemp("tls"))
    srv = _TrickyServer(("127.0.0.1", 0), _Tricky)
    srv.world, srv.second_prefix = world, second_server.url_prefix
    srv.counts, srv.lock = Counter(), threading.Lock()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.base, srv.ca = f"https://127.0.0.1:{srv.server_address[1]}", ca
    yield srv
    srv.shutdown()
    srv.server_close()


def tricky_url(server, mode: str, item_id: str) -> str:
    return f"{server.base}/{mode}/{item_id}.jpg"


def requests_to(server, url: str) -> int:
    with server.lock:
        return server.counts[url[len(server.base):]]


ONLY_FIRST = FetchPolicy(("127.0.0.1/32",), CAP, 1.5)


# ------------------------------------------------------------------------------- destinations


def test_lpr_serve_on_loopback_is_refused_unless_allowed(world, lpr_server):
    from lpr_core.synth import source_path

    item = image_ids(world)[0]
    url = f"{lpr_server.url_prefix}{item}.jpg"
    source = source_path(world, item).read_bytes()
    data, err = fetch(url, 2.0)  # the default policy: public destinations only
    assert data is None and err.startswith("refused_private_address: 127.0.0.1 (loopback) is not allowed")
    assert fetch(url, 2.0, policy=FetchPolicy(("10.0.0.0/8",)))[1].startswith("refused_private_address: ")
    assert lpr_server.request_count(item) == 0  # refused before connecting
    assert fetch(url, 2.0, policy=FetchPolicy(True)) == (source, None)
    assert fetch(url, 2.0, policy=ONLY_FIRST) == (source, None)
    assert lpr_server.request_count(item) == 2
    # a host name is resolved and its addresses checked
    by_name = url.replace("127.0.0.1", "localhost")
    data, err = fetch(by_name, 2.0)
    assert data is None and "(loopback), an address of localhost, is not allowed" in err


def test_a_redirect_to_a_refused_address_is_refused(world, tricky, second_server):
    from lpr_core.synth import source_path

    item = image_ids(world)[1]
    t0 = time.monotonic()
    data, err = fetch(tricky_url(tricky, "redirect-meta", item), 2.0, policy=ONLY_FIRST)
    assert data is None and err == ("refused_private_address: 169.254.169.254 (link-local) is not allowed by "
                                    "download.allow_private_networks (after a redirect)")
    assert time.monotonic() - t0 < 1.0  # refused without trying to connect
    assert requests_to(tricky, tricky_url(tricky, "redirect-meta", item)) == 1  # the first hop was allowed
    data, err = fetch(tricky_url(tricky, "redirect-lo2", item), 2.0, policy=ONLY_FIRST)
    assert data is None and err.startswith("refused_private_address: 127.0.0.2 (loopback) is not allowed")
    assert second_server.request_count(item) == 0
    # the same redirect, its target allowed: the image arrives
    data, err = fetch(tricky_url(tricky, "redirect-lo2", item), 2.0, policy=FetchPolicy(("127.0.0.0/8",)))
    assert err is None and data == source_path(world, item).read_bytes()
    assert second_server.request_count(item) == 1
    # the metadata address stays refused when only loopback is allowed
    assert fetch(tricky_url(tricky, "redirect-meta", item), 2.0,
                 policy=FetchPolicy(("127.0.0.0/8",)))[1].startswith("refused_private_address: 169.254.169.254")


def test_every_resolved_address_is_checked(monkeypatch):
    answers = {
        "cdn.example.com": [(socket.AF_INET, "93.184.216.34"), (socket.AF_INET, "10.0.0.7")],
        "mapped.example.com": [(socket.AF_INET6, "::ffff:169.254.169.254")],
    }
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [(fam, socket.SOCK_STREAM, 6, "", (ip, port) if fam == socket.AF_INET else (ip, port, 0, 0))
                for fam, ip in answers[host]]

    connects = []
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: connects.append(addr))
    with pytest.raises(FetchRefused, match=r"10\.0\.0\.7 \(private\), an address of cdn\.example\.com,") as exc:
        guarded_get("http://cdn.example.com/a.jpg", FetchPolicy(), 1.0)
    assert exc.value.reason == "refused_private_address"
    with pytest.raises(FetchRefused, match=r"::ffff:169\.254\.169\.254 \(link-local\)"):
        guarded_get("https://mapped.example.com/a.jpg", FetchPolicy(), 1.0)
    assert connects == []  # no connection to any address of a refused host, the public one included


# --------------------------------------------------------------------------------- size and time


def test_an_oversized_response_is_refused(world, tricky):
    from lpr_core.synth import source_path

    item = image_ids(world)[2]
    policy = FetchPolicy(True, CAP, 10.0)
    data, err = fetch(tricky_url(tricky, "big", item), 2.0, policy=policy)
    body = padded(source_path(world, item).read_bytes(), 4 * CAP)
    assert data is None and err == (f"too_large: Content-Length {len(body)} over the cap of {CAP} bytes "
                                    "(download.max_response_bytes)")
    data, err = fetch(tricky_url(tricky, "big-stream", item), 2.0, policy=policy)
    assert data is None and err == f"too_large: the response over the cap of {CAP} bytes (download.max_response_bytes)"
    # within the cap, the same responses arrive whole
    roomy = FetchPolicy(True, len(body), 10.0)
    assert fetch(tricky_url(tricky, "big", item), 2.0, policy=roomy) == (body, None)
    assert fetch(tricky_url(tricky, "big-stream", item), 2.0, policy=roomy) == (body, None)


@pytest.mark.parametrize("mode", ["drip", "drip-headers"])
def test_a_slow_drip_is_cut_at_max_fetch_seconds(world, tricky, mode):
    from lpr_core.synth import source_path

    item = image_ids(world)[3]
    t0 = time.monotonic()
    data, err = fetch(tricky_url(tricky, mode, item), 1.0, policy=FetchPolicy(True, CAP, 1.0))
    elapsed = time.monotonic() - t0
    assert data is None and err == "too_slow: the fetch took longer than 1 s (download.max_fetch_seconds)"
    assert 0.9 < elapsed < 1.6  # every read was within the 1 s timeout; the whole fetch was not
    # with time enough the same answer arrives: each piece came within the socket timeout
    assert fetch(tricky_url(tricky, mode, item), 1.0, policy=FetchPolicy(True, CAP, 10.0)) == (
        source_path(world, item).read_bytes(), None)


def test_a_stall_past_the_socket_timeout_is_an_ordinary_timeout(world, tricky):
    item = image_ids(world)[4]
    data, err = fetch(tricky_url(tricky, "stall", item), 0.5, policy=FetchPolicy(True, CAP, 10.0))
    assert data is None and err.startswith("timeout: ")


def test_https_goes_through_the_same_guard(world, tls, monkeypatch):
    from lpr_core.synth import source_path

    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))  # the test CA, read when a TLS context is made
    item = image_ids(world)[6]
    source = source_path(world, item).read_bytes()
    url = tricky_url(tls, "ok", item)
    assert fetch(url, 2.0, policy=FetchPolicy())[1].startswith("refused_private_address: 127.0.0.1 (loopback)")
    assert requests_to(tls, url) == 0  # refused before the handshake
    assert fetch(url, 2.0, policy=FetchPolicy(True, CAP, 10.0)) == (source, None)
    data, err = fetch(tricky_url(tls, "big", item), 2.0, policy=FetchPolicy(True, CAP, 10.0))
    assert data is None and err.startswith("too_large: Content-Length ")
    data, err = fetch(tricky_url(tls, "big-stream", item), 2.0, policy=FetchPolicy(True, CAP, 10.0))
    assert data is None and err.startswith("too_large: the response over the cap")
    t0 = time.monotonic()
    data, err = fetch(tricky_url(tls, "drip", item), 1.0, policy=FetchPolicy(True, CAP, 1.0))
    assert data is None and err.startswith("too_slow: ") and time.monotonic() - t0 < 1.6
    data, err = fetch(tricky_url(tls, "redirect-meta", item), 2.0, policy=ONLY_FIRST)
    assert data is None and err.startswith("refused_private_address: 169.254.169.254 (link-local)")
    # the certificate is still checked: without the test CA the handshake fails
    monkeypatch.delenv("SSL_CERT_FILE")
    data, err = fetch(url, 2.0, policy=FetchPolicy(True, CAP, 10.0))
    assert data is None and "CERTIFICATE_VERIFY_FAILED" in err


# ---------------------------------------------------------------------------------- img2dataset


def test_img2dataset_still_has_the_hook_points():
    """The guard replaces functions img2dataset looks up at call time; an upgrade must keep them."""
    import importlib

    import img2dataset.downloader as downloader

    from lpr_core.data.fetch_guard import DISTRIBUTORS, guarded_distributors

    main = importlib.import_module("img2dataset.main")  # the package's main() shadows the module

    assert "download_image_with_retry(" in inspect.getsource(downloader.Downloader.download_shard)
    source = inspect.getsource(main.download)
    saved = {name: getattr(main, name) for name in DISTRIBUTORS}
    assert all(name in source for name in DISTRIBUTORS)
    with guarded_distributors(FetchPolicy()):
        for name in DISTRIBUTORS:
            wrapped = getattr(main, name)
            assert wrapped is not saved[name] and wrapped.args[0] is saved[name]
    assert {name: getattr(main, name) for name in DISTRIBUTORS} == saved


def test_guarded_downloader_swaps_img2dataset_fetch_around_each_shard_only():
    import img2dataset.downloader as downloader

    from lpr_core.data import fetch_guard

    original = downloader.download_image_with_retry
    seen = []

    def shard(row):
        seen.append(downloader.download_image_with_retry)
        return True, row

    policy = FetchPolicy(("10.0.0.0/8",), 1000, 3.0)
    guarded = fetch_guard.GuardedDownloader(shard, policy)
    assert guarded(("0", "shard.feather")) == (True, ("0", "shard.feather"))
    assert seen[0].func is fetch_guard._download_image_with_retry and seen[0].keywords == {"policy": policy}
    assert downloader.download_image_with_retry is original
    # it travels to img2dataset's workers by pickle, policy included
    again = pickle.loads(pickle.dumps(fetch_guard.GuardedDownloader(len, policy)))
    assert again.policy == policy and again.policy.refusal("10.1.1.1") is None


def test_img2dataset_fetch_through_the_guard_matches_img2dataset(world, lpr_server, tricky):
    """Same bodies and error strings as img2dataset's own fetch where the guard allows; a refusal
    is final (no second request)."""
    from img2dataset.downloader import download_image_with_retry as theirs

    from lpr_core.data.fetch_guard import _download_image_with_retry as ours

    item = image_ids(world)[5]
    ok = (7, f"{lpr_server.url_prefix}{item}.jpg")
    missing = (8, tricky_url(tricky, "nothing", item))
    allow = FetchPolicy(True, CAP, 10.0)
    for row in (ok, missing):
        k1, s1, e1 = theirs(row, 2.0, 0, None, None)
        k2, s2, e2 = ours(row, 2.0, 0, None, None, policy=allow)
        assert (k1, e1) == (k2, e2) and (s1 is None) == (s2 is None)
        assert s1 is None or s1.getvalue() == s2.getvalue()
    assert ours(missing, 2.0, 0, None, None, policy=allow)[2] == "HTTP Error 404: Not Found"
    before = lpr_server.request_count(item)
    key, stream, err = ours(ok, 2.0, 3, None, None, policy=FetchPolicy())
    assert (key, stream) == (7, None) and err.startswith("refused_private_address: 127.0.0.1 (loopback)")
    big = (9, tricky_url(tricky, "big", item))
    assert ours(big, 2.0, 3, None, None, policy=allow)[2].startswith("too_large: ")
    assert requests_to(tricky, big[1]) == 1 and lpr_server.request_count(item) == before


def _stage(urls: Path, out: Path, params: DownloadParams, tmp: Path, name: str) -> dict:
    params_path = tmp / f"{name}.yaml"
    params_path.write_text(yaml.safe_dump({"download": to_mapping(params)}), encoding="utf-8")
    metrics = tmp / f"{name}-metrics.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, "-m", "lpr_core.stages.download", "--urls", str(urls), "--out", str(out),
                           "--params", str(params_path), "--metrics", str(metrics), "--no-progress"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"log": proc.stdout + proc.stderr, "metrics": json.loads(metrics.read_text()),
            "summary": json.loads((out / "download_summary.json").read_text())["lists"]["test_image_urls"],
            "rows": {r["image_id"]: r for r in pq.read_table(out / "manifests" / "test_images.parquet").to_pylist()}}


EXPECTED = {
    "ok": None,
    "lo2": "refused_private_address",
    "redirect-meta": "refused_private_address",
    "redirect-lo2": "refused_private_address",
    "big": "too_large",
    "big-stream": "too_large",
    "drip": "too_slow",
}


@pytest.mark.slow
@pytest.mark.integration
def test_the_stage_refuses_in_img2dataset_counts_refusals_and_retries_them_once_allowed(
        world, tmp_path, lpr_server, second_server, tricky):
    from lpr_core.synth import source_path

    ids = image_ids(world)
    modes = list(EXPECTED)
    mode_of = {item: modes[i % len(modes)] for i, item in enumerate(ids)}
    # the servers are shared with the other tests of this module: count this test's requests only
    second_before = second_server.request_counts()
    with tricky.lock:
        tricky_before = Counter(tricky.counts)

    def asked(mode: str, item: str) -> int:
        url = tricky_url(tricky, mode, item)
        return requests_to(tricky, url) - tricky_before[url[len(tricky.base):]]

    urls = []
    for item, mode in mode_of.items():
        if mode == "ok":
            urls.append(f"{lpr_server.url_prefix}{item}.jpg")
        elif mode == "lo2":
            urls.append(f"{second_server.url_prefix}{item}.jpg")
        else:
            urls.append(tricky_url(tricky, mode, item))
    url_dir = tmp_path / "urls"
    url_dir.mkdir()
    (url_dir / "test_image_url_12.txt").write_text("".join(u + "\n" for u in urls))
    base = load_section(DownloadParams, "download", REPO / "params.yaml")
    strict = dataclasses.replace(base, processes=1, thread_count=4, timeout=1.0, number_sample_per_shard=5,
                                 allow_private_networks=("127.0.0.1/32",), max_response_bytes=CAP,
                                 max_fetch_seconds=1.5, retry_pass=RetryPassParams(attempts=2, backoff=0.05))
    out = tmp_path / "out"
    first = _stage(url_dir, out, strict, tmp_path, "strict")

    refused = Counter()
    for item, mode in mode_of.items():
        row = first["rows"][item]
        reason = EXPECTED[mode]
        if reason is None:
            assert row["status"] == "success", row
            assert row["sha256"] == hashlib.sha256(source_path(world, item).read_bytes()).hexdigest()
        else:
            assert row["status"] == "failed" and row["path"] is None and row["sha256"] is None, row
            assert row["error"].split(":", 1)[0] == reason, row
            refused[reason] += 1
    assert not any(r["status"] == "success" and (r["error"] or "").split(":")[0] in REFUSAL_REASONS
                   for r in first["rows"].values())
    # img2dataset's own fetches were refused (its shard rows say so), not only the retry pass's
    shard_errors = {}
    for _, path in complete_shards(out / "test_images"):
        for r in pq.read_table(path).to_pylist():
            shard_errors[r["url"].rsplit("/", 1)[1][:-4]] = r["error_message"]
    for item, mode in mode_of.items():
        if EXPECTED[mode] is not None:
            assert shard_errors[item].startswith(f"{EXPECTED[mode]}: "), (mode, shard_errors[item])
    # refused URLs were asked once (by img2dataset) and never by the retry pass; 127.0.0.2 never
    assert second_server.request_counts() == second_before
    for item, mode in mode_of.items():
        if mode not in ("ok", "lo2"):
            assert asked(mode, item) == 1, mode
    s = first["summary"]
    assert s["refused"] == sum(refused.values()) and s["refused_by_reason"] == dict(refused)
    assert s["failed"] == s["refused"] and s["retried"] == 0
    m = first["metrics"]
    assert m["download/test_image_urls/refused"] == sum(refused.values())
    for reason in REFUSAL_REASONS:
        assert m[f"download/test_image_urls/{reason}"] == refused[reason]
    assert "refused by the fetch guard, not retried" in first["log"]

    # looser settings: the refusals that no longer stand are fetched by the retry pass; the
    # metadata address stays refused (loopback is allowed, link-local is not) and is not asked
    loose = dataclasses.replace(strict, allow_private_networks=("127.0.0.0/8",), max_response_bytes=1 << 20,
                                max_fetch_seconds=10.0)
    second = _stage(url_dir, out, loose, tmp_path, "loose")
    assert "img2dataset not needed" in second["log"]
    for item, mode in mode_of.items():
        row = second["rows"][item]
        if mode == "redirect-meta":
            assert row["status"] == "failed" and row["error"].startswith("refused_private_address: 169.254.169.254")
            assert asked(mode, item) == 1
        else:
            assert row["status"] == "success", (mode, row)
            if mode != "ok":
                assert row["path"] == f"test_images/retried/{item}.jpg"
    still = sum(mode == "redirect-meta" for mode in mode_of.values())
    assert second["summary"]["refused_by_reason"] == {"refused_private_address": still}
    assert second["metrics"]["download/test_image_urls/refused"] == still
