"""``lpr serve``: serve a synthetic world's JPEGs over loopback HTTP, with fault injection.

The server answers ``GET`` and ``HEAD`` for any path whose last component is ``<id>.jpg``: a
frame id or an image id of the world maps to its source JPEG (see
:func:`lpr_core.synth.layout.source_path`); anything else is a 404. The path before the last
component is ignored, so every URL prefix of the URL files works. Faults are deterministic per id
(see :mod:`lpr_core.synth.faults`), and requests are counted per id for tests.

It binds to a loopback address only.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lpr_core.synth.faults import ALL_KINDS, FaultKind, corrupt_bytes, fault_for, truncate_jpeg
from lpr_core.synth.layout import SOURCE_DIR, source_path
from lpr_core.synth.world import set_url_prefix

log = logging.getLogger(__name__)

__all__ = [
    "ImageServer",
    "PortInUseError",
    "FaultKind",
    "fault_for",
    "DEFAULT_SLOW_SECONDS",
    "URL_PATH",
    "add_arguments",
    "run",
]

#: How long a SLOW fault stalls: longer than img2dataset's default 10 s timeout.
DEFAULT_SLOW_SECONDS = 12.0
#: The path part of the server's URL prefix.
URL_PATH = "/lpr/"


class PortInUseError(OSError):
    """Raised when the server's port is already taken."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    owner: ImageServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "lpr-synth"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        if self.server.owner.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self._serve(body=False)

    def _send(self, status: int, data: bytes, body: bool, content_type: str = "image/jpeg") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if status == 503:
                self.send_header("Retry-After", "0")
            self.end_headers()
            if body:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. a timeout)
            pass

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        name = unquote(urlsplit(self.path).path).rsplit("/", 1)[-1]
        if not name.endswith(".jpg"):
            self._send(404, b"not found\n", body, "text/plain")
            return
        item_id = name[:-4]
        nth = owner._count(item_id)
        path = owner._source(item_id)
        if path is None or not path.is_file():
            self._send(404, b"not found\n", body, "text/plain")
            return
        kind = owner.fault_for(item_id)
        if kind is FaultKind.NOT_FOUND:
            self._send(404, b"not found\n", body, "text/plain")
            return
        if kind is FaultKind.SERVER_ERROR:
            self._send(500, b"internal server error\n", body, "text/plain")
            return
        if kind is FaultKind.TRANSIENT and nth <= owner.transient_failures:
            self._send(503, b"service unavailable, retry\n", body, "text/plain")
            return
        if kind is FaultKind.SLOW and nth <= owner.slow_requests:
            if owner._stopping.wait(owner.slow_seconds):
                return  # shutting down
        data = path.read_bytes()
        if kind is FaultKind.TRUNCATED:
            data = truncate_jpeg(data, item_id, owner.seed)
        elif kind is FaultKind.CORRUPT:
            data = corrupt_bytes(data, item_id, owner.seed)
        self._send(200, data, body)


class ImageServer:
    """A loopback HTTP server of a world's JPEGs, with deterministic fault injection.

    Use as a context manager (``with ImageServer(world) as srv: ... srv.url_prefix``) or call
    :meth:`start` and :meth:`stop`. It serves from a background thread.

    Args:
        world_dir: a world written by :func:`lpr_core.synth.generate_world`.
        host: a loopback address to bind.
        port: the port; 0 picks a free one (see :attr:`port`).
        fault_rate: share of ids that get a fault, in [0, 1].
        seed: seed of the fault draw.
        slow_seconds: stall of a SLOW fault.
        transient_failures: 503 answers of a TRANSIENT id before it succeeds.
        slow_requests: stalled answers of a SLOW id before it answers at once.
        kinds: the fault kinds to spread faults over.
        verbose: log every request to stderr.
    """

    def __init__(
        self,
        world_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        fault_rate: float = 0.0,
        seed: int = 0,
        slow_seconds: float = DEFAULT_SLOW_SECONDS,
        *,
        transient_failures: int = 1,
        slow_requests: int = 1,
        kinds: tuple[FaultKind, ...] = ALL_KINDS,
        verbose: bool = False,
    ) -> None:
        self.world_dir = Path(world_dir)
        if not (self.world_dir / SOURCE_DIR).is_dir():
            raise FileNotFoundError(f"{self.world_dir} is not a synthetic world (no {SOURCE_DIR}/ directory)")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the image server binds to a loopback address only, got {host!r}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {fault_rate}")
        self.host = host
        self._port = int(port)
        self.fault_rate = float(fault_rate)
        self.seed = int(seed)
        self.slow_seconds = float(slow_seconds)
        self.transient_failures = int(transient_failures)
        self.slow_requests = int(slow_requests)
        self.kinds = tuple(kinds)
        self.verbose = verbose
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> ImageServer:
        """Bind and start serving in a background thread.

        Raises:
            PortInUseError: when the port is taken.
        """
        if self._httpd is not None:
            return self
        try:
            httpd = _Server((self.host, self._port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(errno.EADDRINUSE,
                                     f"port {self._port} on {self.host} is already in use "
                                     f"(choose another port, or 0 for a free one)") from None
            raise
        httpd.owner = self
        self._httpd = httpd
        self._port = httpd.server_address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"lpr-serve-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (wakes stalled SLOW answers)."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- properties

    @property
    def port(self) -> int:
        """The bound port (the requested one until :meth:`start`)."""
        return self._port

    @property
    def url_prefix(self) -> str:
        """The URL prefix of this server, e.g. ``http://127.0.0.1:43121/lpr/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}{URL_PATH}"

    # -- faults and counts

    def fault_for(self, item_id: str) -> FaultKind | None:
        """The fault this server injects for ``item_id`` (None: served normally)."""
        return fault_for(item_id, self.fault_rate, self.seed, self.kinds)

    def request_count(self, item_id: str) -> int:
        """How many requests this server received for ``item_id``."""
        with self._lock:
            return self._counts[item_id]

    def request_counts(self) -> dict[str, int]:
        """A snapshot of the request count of every requested id."""
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        """Forget every request count (TRANSIENT and SLOW ids fail again)."""
        with self._lock:
            self._counts.clear()

    def _count(self, item_id: str) -> int:
        with self._lock:
            self._counts[item_id] += 1
            return self._counts[item_id]

    def _source(self, item_id: str) -> Path | None:
        return source_path(self.world_dir, item_id)


# --- CLI ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``lpr serve``."""
    parser.add_argument("world", help="world directory written by `lpr synth`")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: a free one; default 8000)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of ids that fail, in [0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draw")
    parser.add_argument("--slow-seconds", type=float, default=DEFAULT_SLOW_SECONDS,
                        help=f"stall of a slow fault (default {DEFAULT_SLOW_SECONDS:g} s)")
    parser.add_argument("--rewrite-urls", action="store_true",
                        help="rewrite the world's URL files to this server's prefix before serving")
    parser.add_argument("--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    try:
        server = ImageServer(args.world, port=args.port, fault_rate=args.fault_rate, seed=args.seed,
                             slow_seconds=args.slow_seconds, verbose=args.verbose)
        server.start()
    except (PortInUseError, FileNotFoundError, ValueError) as exc:
        msg = exc.strerror if isinstance(exc, PortInUseError) else str(exc)
        log.error("lpr serve: error: %s", msg)
        return 1
    try:
        if args.rewrite_urls:
            n = set_url_prefix(args.world, server.url_prefix)
            print(f"rewrote {n} URLs to {server.url_prefix}", flush=True)
        print(f"serving {args.world} at {server.url_prefix} (fault rate {server.fault_rate:g}, seed {server.seed}); "
              f"Ctrl-C to stop", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        log.error("lpr serve: error: %s", exc)
        return 1
    finally:
        server.stop()
    return 0
