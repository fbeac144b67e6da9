"""The fetch guard: where one download may connect, how much it may read and for how long.

Every image fetch of the download stage goes through :func:`guarded_get`: img2dataset's own
fetches (its worker processes, on any distributor) and the per-sample retry pass. Three rules,
set in the ``download`` section of ``params.yaml`` (:class:`FetchPolicy`):

- **Destinations.** The host name is resolved once and *every* resolved address is checked; the
  connection then goes to a checked address (a second lookup cannot swap in another one). An
  address that is not public (loopback, private, link-local such as the cloud metadata service
  ``169.254.169.254``, unspecified, multicast, shared ``100.64.0.0/10``, reserved), also when
  written as IPv4-mapped / NAT64 / 6to4 IPv6, is refused unless ``allow_private_networks`` is
  ``true`` or lists a network holding it. The check runs on every connection, so a redirect to
  a refused address is refused too. Failure reason ``refused_private_address``.
- **Size.** A response announcing more than ``max_response_bytes`` is refused before its body is
  read; one without a length is read up to one byte past the cap, then refused. The bytes read
  on the socket across all hops are capped too (headers and redirect bodies included). Reason
  ``too_large``.
- **Time.** One fetch (name lookup, connects, TLS handshakes, redirects and every read) ends
  after ``max_fetch_seconds``: every socket operation waits at most the per-request ``timeout``
  and never past that deadline, so a server dripping a byte now and then within the timeout is
  still cut off. Reason ``too_slow``. (Only the name lookup itself cannot be interrupted; the
  deadline is checked as soon as it returns.)

Refusals raise :class:`FetchRefused`; its message is ``"<reason>: <detail>"``, the manifest's
error format, and names the setting at stake so that :func:`refusal_stands` can tell whether a
refusal still holds under other settings. Proxies from the environment (``http_proxy``...) are
not used: the guard checks the destination itself.

The hook into img2dataset (1.47): :func:`guarded_distributors` wraps, for one
``img2dataset.download`` call, each of img2dataset's distributor functions so that the
``Downloader`` they send to their workers is a :class:`GuardedDownloader`. That object is
pickled to the worker (a forked or spawned process, a Spark or Ray executor) and, around each
shard, swaps img2dataset's module-level ``download_image_with_retry`` (which its ``Downloader``
looks up at every call) for one that fetches through :func:`guarded_get` with img2dataset's own
User-Agent, X-Robots-Tag rule, retries and error strings. No img2dataset code is copied.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import importlib
import io
import ipaddress
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "REFUSALS",
    "FetchPolicy",
    "FetchRefused",
    "Disallowed",
    "address_class",
    "guarded_get",
    "refusal_stands",
    "GuardedDownloader",
    "guarded_img2dataset",
    "guarded_distributors",
    "DISTRIBUTORS",
]

#: The failure reasons of a refused fetch (the manifest ``error`` prefix).
REFUSALS = ("refused_private_address", "too_large", "too_slow")
#: Bytes a fetch may read on top of ``max_response_bytes``: status lines, headers, redirect bodies.
HEADER_ALLOWANCE = 1 << 20
#: img2dataset's User-Agent (``img2dataset.downloader.download_image``).
USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


class FetchRefused(Exception):
    """A fetch the guard refused; ``str()`` is ``"<reason>: <detail>"``.

    Not an ``OSError``: urllib and http.client let it through unchanged.

    Attributes:
        reason: one of :data:`REFUSALS`.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Disallowed(Exception):
    """The response carries an X-Robots-Tag directive the caller refuses (img2dataset's message)."""


@dataclass(frozen=True)
class FetchPolicy:
    """The guard's settings (the ``download`` parameters of the same names).

    Attributes:
        allow_private_networks: ``True``: any destination; ``False``: public addresses only; a
            tuple of networks (``"127.0.0.0/8"``, ``"10.1.2.3"``, ``"fd00::/8"``): public
            addresses and these.
        max_response_bytes: the largest response body accepted.
        max_fetch_seconds: the longest one fetch may take, redirects included.
    """

    allow_private_networks: bool | tuple[str, ...] = False
    max_response_bytes: int = 16 << 20
    max_fetch_seconds: float = 60.0
    _networks: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be >= 1, got {self.max_response_bytes}")
        if not self.max_fetch_seconds > 0:
            raise ValueError(f"max_fetch_seconds must be > 0, got {self.max_fetch_seconds}")
        networks = []
        if not isinstance(self.allow_private_networks, bool):
            for i, text in enumerate(self.allow_private_networks):
                try:
                    networks.append(ipaddress.ip_network(str(text), strict=False))
                except ValueError as exc:
                    raise ValueError(f"allow_private_networks[{i}]: {text!r} is not a network ({exc})") from None
        object.__setattr__(self, "_networks", tuple(networks))

    def refusal(self, address: str) -> str | None:
        """Why ``address`` is refused as a destination (e.g. ``"loopback"``), or None when allowed."""
        kind = address_class(address)
        if kind is None or self.allow_private_networks is True:
            return None
        ip = _unwrap(ipaddress.ip_address(address))
        if any(ip.version == net.version and ip in net for net in self._networks):
            return None
        return kind


def _unwrap(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address inside an IPv4-mapped, NAT64, 6to4 or IPv4-compatible IPv6 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.packed)
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


@functools.lru_cache(maxsize=4096)  # a download asks about the same few CDN addresses again and again
def address_class(address: str) -> str | None:
    """The class of a non-public address, or None for a public (globally routable) one.

    IPv4 inside IPv6 (``::ffff:127.0.0.1``, ``64:ff9b::a9fe:a9fe``, ``2002:7f00:1::``) is judged
    as the IPv4 address it reaches.

    Returns:
        ``"loopback"``, ``"link-local"``, ``"unspecified"``, ``"multicast"``, ``"private"``,
        ``"reserved"`` or ``"not public"``; None when public.

    Raises:
        ValueError: when ``address`` is not an IP address.
    """
    ip = _unwrap(ipaddress.ip_address(address))
    for kind, test in (("loopback", "is_loopback"), ("link-local", "is_link_local"),
                       ("unspecified", "is_unspecified"), ("multicast", "is_multicast"),
                       ("private", "is_private"), ("private", "is_site_local"), ("reserved", "is_reserved")):
        if getattr(ip, test, False):
            return kind
    return None if ip.is_global else "not public"


# ------------------------------------------------------------------------------ one fetch's state


class _Limits:
    """The deadline and byte budget of one fetch, shared by all its hops."""

    def __init__(self, policy: FetchPolicy, timeout: float) -> None:
        self.policy = policy
        self.timeout = float(timeout)
        self.deadline = time.monotonic() + policy.max_fetch_seconds
        self.budget = policy.max_response_bytes + HEADER_ALLOWANCE
        self.hops = 0

    def wait(self) -> tuple[float, bool]:
        """``(seconds, deadline_bound)``: how long the next socket operation may wait."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.too_slow()
        return (left, True) if left < self.timeout else (self.timeout, False)

    def too_slow(self) -> FetchRefused:
        return FetchRefused("too_slow", f"the fetch took longer than {self.policy.max_fetch_seconds:g} s "
                                        "(download.max_fetch_seconds)")

    def too_large(self, what: str) -> FetchRefused:
        return FetchRefused("too_large", f"{what} over the cap of {self.policy.max_response_bytes} bytes "
                                         "(download.max_response_bytes)")

    def connect(self, host: str, port: int) -> socket.socket:
        """Resolve ``host``, check every address, connect to the first that answers."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(exc.errno, f"name resolution of {host!r} failed: {exc.strerror}") from None
        self.wait()
        for *_, sockaddr in infos:
            why = self.policy.refusal(sockaddr[0])
            if why is not None:
                of = "" if sockaddr[0] == host else f", an address of {host},"
                after = " (after a redirect)" if self.hops else ""
                raise FetchRefused("refused_private_address",
                                   f"{sockaddr[0]} ({why}){of} is not allowed by download.allow_private_networks"
                                   f"{after}")
        self.hops += 1
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                self._timed(sock, lambda: sock.connect(sockaddr))  # noqa: B023 - called at once
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"no address for {host!r}")

    def _timed(self, sock: Any, op: Any) -> Any:
        seconds, bound = self.wait()
        if sock.gettimeout() != seconds:  # settimeout costs a system call; it rarely changes
            sock.settimeout(seconds)
        try:
            return op()
        except TimeoutError:
            if bound:
                raise self.too_slow() from None
            raise


class _LimitedReader(io.RawIOBase):
    """The socket's read side: each read waits within the fetch's deadline and spends its budget."""

    def __init__(self, sock: Any, limits: _Limits) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # the socket's own reader (it keeps the fd open)
        self._limits = limits

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._limits._timed(self._sock, lambda: self._raw.readinto(buffer)) or 0
        self._limits.budget -= n
        if self._limits.budget < 0:
            raise self._limits.too_large("the bytes received")
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _LimitedSocket:
    """A connected socket whose ``makefile`` gives :class:`_LimitedReader` (what http.client reads)."""

    def __init__(self, sock: Any, limits: _Limits) -> None:
        self._sock = sock
        self._limits = limits

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"unsupported makefile mode {mode!r}")
        return io.BufferedReader(_LimitedReader(self._sock, self._limits))

    def sendall(self, data: Any) -> None:
        self._limits._timed(self._sock, lambda: self._sock.sendall(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, limits: _Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits

    def connect(self) -> None:
        self.sock = _LimitedSocket(self._limits.connect(self.host, self.port), self._limits)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, limits: _Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits

    def connect(self) -> None:
        raw = self._limits.connect(self.host, self.port)
        try:
            tls = self._limits._timed(raw, lambda: self._context.wrap_socket(raw, server_hostname=self.host))
        except BaseException:
            raw.close()
            raise
        self.sock = _LimitedSocket(tls, self._limits)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(_HTTPConnection, limits=req.fetch_limits), req)  # type: ignore[attr-defined]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(functools.partial(_HTTPSConnection, limits=req.fetch_limits), req,  # type: ignore[attr-defined]
                            context=self._context)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.fetch_limits = req.fetch_limits  # the next hop shares the deadline and budget
        return new


_OPENER_LOCK = threading.Lock()
_OPENER: urllib.request.OpenerDirector | None = None


def _opener() -> urllib.request.OpenerDirector:
    """urllib's opener with the guarded HTTP(S) handlers and nothing else (no proxy, ftp, file, data)."""
    global _OPENER
    with _OPENER_LOCK:
        if _OPENER is None:
            opener = urllib.request.OpenerDirector()
            for handler in (_HTTPHandler(), _HTTPSHandler(), _RedirectHandler(), urllib.request.UnknownHandler(),
                            urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
                opener.add_handler(handler)
            _OPENER = opener
        return _OPENER


def guarded_get(url: str, policy: FetchPolicy, timeout: float, user_agent: str = USER_AGENT,
                disallowed: set[str] | None = None, user_agent_token: str | None = None) -> bytes:
    """GET ``url`` through the guard and return the body.

    Args:
        url: an http(s) URL.
        policy: the guard's settings.
        timeout: seconds any one socket operation may wait (img2dataset's ``timeout``).
        user_agent: the User-Agent header.
        disallowed: X-Robots-Tag directives that refuse the image (img2dataset's rule); None: none.
        user_agent_token: the token X-Robots-Tag directives may address (img2dataset's).

    Returns:
        The response body.

    Raises:
        FetchRefused: a refused destination, a response too large or a fetch too slow.
        Disallowed: an X-Robots-Tag directive in ``disallowed``.
        urllib.error.HTTPError, urllib.error.URLError, OSError, http.client.HTTPException: as
            ``urllib.request.urlopen`` would.
    """
    request = urllib.request.Request(url, headers={"User-Agent": user_agent})
    limits = _Limits(policy, timeout)
    request.fetch_limits = limits  # type: ignore[attr-defined]
    with _opener().open(request, timeout=timeout) as response:
        if disallowed:
            from img2dataset.downloader import is_disallowed

            if is_disallowed(response.headers, user_agent_token, disallowed):
                raise Disallowed("Use of image disallowed by X-Robots-Tag directive")
        length = response.length
        if length is not None and length > policy.max_response_bytes:
            raise limits.too_large(f"Content-Length {length}")
        # with a length, read() raises IncompleteRead on a short body; without, read one past the cap
        body = response.read() if length is not None else response.read(policy.max_response_bytes + 1)
        if len(body) > policy.max_response_bytes:
            raise limits.too_large("the response")
        return body


_STANDS = {
    "refused_private_address": re.compile(r"^refused_private_address: (\S+) \("),
    "too_large": re.compile(r"over the cap of (\d+) bytes"),
    "too_slow": re.compile(r"longer than ([0-9.e+-]+) s"),
}


def refusal_stands(error: str | None, policy: FetchPolicy) -> bool:
    """Whether a refusal recorded as ``error`` (a manifest error) still holds under ``policy``.

    A URL refused under stricter settings (the address now allowed, a larger cap, a longer
    deadline) is worth fetching again; one whose refusal stands is not.
    """
    reason = (error or "").split(":", 1)[0]
    if reason not in _STANDS:
        return False
    m = _STANDS[reason].search(error or "")
    if m is None:
        return True
    if reason == "refused_private_address":
        try:
            return policy.refusal(m.group(1)) is not None
        except ValueError:
            return True
    if reason == "too_large":
        return policy.max_response_bytes <= int(m.group(1))
    return policy.max_fetch_seconds <= float(m.group(1))


# ---------------------------------------------------------------------------------- img2dataset


def _download_image_with_retry(row: tuple[int, str], timeout: float, retries: int, user_agent_token: str | None,
                               disallowed_header_directives: set[str] | None, *, policy: FetchPolicy):
    """img2dataset's ``download_image_with_retry`` through the guard: same User-Agent, X-Robots-Tag
    rule and error strings; a refusal is final (not retried)."""
    key, url = row
    agent = USER_AGENT
    if user_agent_token:
        agent += f" (compatible; {user_agent_token}; +https://github.com/rom1504/img2dataset)"
    err = None
    for _ in range(retries + 1):
        try:
            body = guarded_get(url, policy, timeout, agent, disallowed_header_directives, user_agent_token)
        except FetchRefused as exc:
            return key, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - img2dataset records every failure as str(err)
            err = str(exc)
            continue
        return key, io.BytesIO(body), None
    return key, None, err


_INSTALL_LOCK = threading.Lock()


@contextlib.contextmanager
def guarded_img2dataset(policy: FetchPolicy) -> Iterator[None]:
    """In this process, make img2dataset's ``Downloader`` fetch through the guard (restored on exit)."""
    import img2dataset.downloader as downloader

    with _INSTALL_LOCK:
        saved = downloader.download_image_with_retry
        downloader.download_image_with_retry = functools.partial(_download_image_with_retry, policy=policy)
    try:
        yield
    finally:
        with _INSTALL_LOCK:
            downloader.download_image_with_retry = saved


class GuardedDownloader:
    """img2dataset's ``Downloader`` whose shards fetch through the guard, wherever it is unpickled.

    Args:
        downloader: the ``img2dataset.downloader.Downloader`` that ``img2dataset.download`` built.
        policy: the guard's settings.
    """

    def __init__(self, downloader: Any, policy: FetchPolicy) -> None:
        self.downloader = downloader
        self.policy = policy

    def __call__(self, row: Any) -> Any:
        with guarded_img2dataset(self.policy):
            return self.downloader(row)


def _guarded_distributor(distributor: Any, policy: FetchPolicy, processes_count: int, downloader: Any,
                         reader: Any, subjob_size: int, max_shard_retry: int) -> Any:
    return distributor(processes_count, GuardedDownloader(downloader, policy), reader, subjob_size, max_shard_retry)


#: img2dataset's distributor functions, as ``img2dataset.main.download`` looks them up.
DISTRIBUTORS = ("multiprocessing_distributor", "pyspark_distributor", "ray_distributor")


@contextlib.contextmanager
def guarded_distributors(policy: FetchPolicy) -> Iterator[None]:
    """During one ``img2dataset.download`` call, every shard it distributes fetches through the guard.

    Main thread only; restores img2dataset's distributors on exit.
    """
    # the module, not the package's ``main`` function of the same name that shadows it
    main = importlib.import_module("img2dataset.main")
    saved = {name: getattr(main, name) for name in DISTRIBUTORS}
    for name, fn in saved.items():
        setattr(main, name, functools.partial(_guarded_distributor, fn, policy))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(main, name, fn)

